"""The types of the OpenAI request fields the gateway knows, per endpoint (pydantic).

`check_json(kind, body)` checks a chat, completions or embeddings body read by
`strict_json`; `check_form(parts)` the parts of an audio upload read by `multipart`
(`file` a file, the known text fields text, valid UTF-8).
Both raise `BodyError` (400) with `param` naming the field (`max_tokens`,
`messages[0].role`). The policy:
- Only the known fields are checked; unknown ones pass (engines have extensions).
  Presence is the engine's business (a chat without `messages` reaches it), except
  `model`, which `openai_api` requires (a non-empty string, `missing_model`).
- Strict: no coercion that changes meaning. `"stream": "yes"` is not true, `"5"` is
  not 5, `true` is not 1 (Python's bool is an int; pydantic's strict mode says no).
- Ranges where the gateway acts on a value: token counts (`max_tokens`,
  `max_completion_tokens`, llama.cpp's `n_predict`) are 1..`MAX_TOKENS_CEILING`
  (-1 is "infinite" to Ollama and llama.cpp; 2**32 wraps in an int32), `n` and
  `best_of` 1..`MAX_CHOICES`.
- The token fields are one setting: when a body has several, they must agree
  (vLLM reads `max_completion_tokens` first, llama.cpp `n_predict`, Ollama only
  `max_tokens`).
- A known field spelt in another case (`"MAX_TOKENS"`, `"Stream"`, also inside
  `stream_options`) is refused (`ambiguous_key`): Go's encoding/json reads it as the
  field, Python engines and the gateway do not.
- A known field set to null is absent: `check_json` removes it, so route defaults
  and caps apply as if it was never sent.
The validators are built once at import (pydantic compiles them then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, NotRequired, Required, TypedDict

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config

from flm_gateway.bodies import BodyError
from flm_gateway.bodies.multipart import Part
from flm_gateway.bodies.strict_json import fold_key
from flm_gateway.core.text import echo

MAX_TOKENS_CEILING = 1_048_576
"""No engine generates a million tokens in one answer; above it a value is a typo or an attack."""
MAX_CHOICES = 128
"""OpenAI's own limit for `n`."""
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "n_predict")
"""The fields that bound the tokens generated per choice, as different engines read them."""
CHOICE_FIELDS = ("n", "best_of")
"""The fields that multiply them: choices generated per request."""

TokenCount = Annotated[int, Field(ge=1, le=MAX_TOKENS_CEILING)]
Choices = Annotated[int, Field(ge=1, le=MAX_CHOICES)]
Int64 = Annotated[int, Field(ge=-(2**63), lt=2**63)]
"""What Go's int and C's int64_t hold; Python's int has no bound."""
TokenIds = list[Int64] | list[list[Int64]]
# TypedDicts rather than models: the same checks, no instances built (~2.5x faster).
_OPEN = ConfigDict(extra="allow", strict=True)
"""Known fields typed strictly; any other field allowed."""


@with_config(_OPEN)
class StreamOptions(TypedDict, total=False):
    include_usage: bool | None


@with_config(_OPEN)
class ContentPart(TypedDict):
    type: str


@with_config(_OPEN)
class Message(TypedDict):
    role: str
    content: NotRequired[str | list[ContentPart] | None]
    name: NotRequired[str | None]
    tool_calls: NotRequired[list[dict[str, Any]] | None]
    tool_call_id: NotRequired[str | None]


@with_config(_OPEN)
class FunctionSpec(TypedDict):
    name: str
    description: NotRequired[str | None]
    parameters: NotRequired[dict[str, Any] | None]


@with_config(_OPEN)
class Tool(TypedDict):
    type: str
    function: NotRequired[FunctionSpec | None]


@with_config(_OPEN)
class ResponseFormat(TypedDict):
    type: str


@with_config(_OPEN)
class _Generation(TypedDict, total=False):
    """Fields every text-generating endpoint shares."""

    model: Any  # openai_api requires a non-empty string (`missing_model`)
    max_tokens: TokenCount | None
    max_completion_tokens: TokenCount | None
    n_predict: TokenCount | None
    n: Choices | None
    stream: bool | None
    stream_options: StreamOptions | None
    temperature: float | None
    top_p: float | None
    stop: str | list[str] | None
    presence_penalty: float | None
    frequency_penalty: float | None
    seed: Int64 | None
    user: str | None
    logit_bias: dict[str, float] | None


@with_config(_OPEN)
class ChatRequest(_Generation, total=False):
    messages: list[Message] | None
    tools: list[Tool] | None
    tool_choice: str | dict[str, Any] | None
    response_format: ResponseFormat | None
    parallel_tool_calls: bool | None
    logprobs: bool | None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_CHOICES)] | None


@with_config(_OPEN)
class CompletionRequest(_Generation, total=False):
    prompt: str | list[str] | TokenIds | None
    best_of: Choices | None
    echo: bool | None
    logprobs: Annotated[int, Field(ge=0, le=MAX_CHOICES)] | None
    suffix: str | None


@with_config(_OPEN)
class EmbeddingRequest(TypedDict, total=False):
    model: Any
    input: str | list[str] | TokenIds | None
    encoding_format: str | None
    dimensions: Annotated[int, Field(ge=1, le=1 << 20)] | None
    user: str | None


# The text fields of `/v1/audio/transcriptions` and `/translations`, as sent (strings).
# A form value is text: a number is read from it (lax), never NaN or infinite.
TranscriptionForm = TypedDict(
    "TranscriptionForm",
    {
        "model": Required[str],
        "language": str,
        "prompt": str,
        "response_format": str,
        "temperature": Annotated[float, Field(strict=False, allow_inf_nan=False)],
        "timestamp_granularities[]": list[str],
        "stream": Literal["true", "false"],
    },
    total=False,
)
TranscriptionForm.__pydantic_config__ = _OPEN  # type: ignore[attr-defined]

_VALIDATORS: Mapping[str, TypeAdapter[Any]] = {
    "chat": TypeAdapter(ChatRequest),
    "completions": TypeAdapter(CompletionRequest),
    "embeddings": TypeAdapter(EmbeddingRequest),
}
_FORM_VALIDATOR: TypeAdapter[Any] = TypeAdapter(TranscriptionForm)
JSON_FIELDS: Mapping[str, frozenset[str]] = {
    "chat": frozenset(ChatRequest.__annotations__) | frozenset(_Generation.__annotations__),
    "completions": frozenset(CompletionRequest.__annotations__)
    | frozenset(_Generation.__annotations__),
    "embeddings": frozenset(EmbeddingRequest.__annotations__),
}
"""The known top-level fields per endpoint."""
FORM_FIELDS = frozenset(TranscriptionForm.__annotations__)
"""Form fields that are text; each may appear once (arrays: `name[]`, any number)."""
FILE_FIELD = "file"


def _spellings(fields: frozenset[str]) -> dict[str, str]:
    return {fold_key(name): name for name in fields}


_KNOWN_NAMES = {kind: _spellings(fields) for kind, fields in JSON_FIELDS.items()}
_STREAM_OPTION_NAMES = _spellings(frozenset(StreamOptions.__annotations__))


def _check_spelling(obj: Mapping[str, Any], known: Mapping[str, str], prefix: str) -> None:
    for key in obj:
        exact = known.get(key.casefold() if key.isascii() else fold_key(key))
        if exact is not None and exact != key:
            raise BodyError(
                f"'{echo(key)}' is not '{exact}': field names are case-sensitive here, and "
                f"Go's encoding/json (Ollama) would read it as '{exact}'.",
                "ambiguous_key",
                prefix + echo(key),
            )


def _is_union_tag(part: str | int) -> bool:
    """pydantic names the member of a union in `loc` ('str', 'list[int]', 'ContentPart')."""
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool") or "[" in part or part[:1].isupper()
    )


def _param(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if _is_union_tag(part):
            continue
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _type_error(error: ValidationError) -> BodyError:
    errors = error.errors(include_url=False)
    first = errors[0]
    param = _param(first["loc"])
    alternatives = [e for e in errors if _param(e["loc"]).startswith(param)]
    if len(alternatives) > 1 and any(_is_union_tag(p) for p in first["loc"]):
        reason = "it matches none of the accepted types"
    else:
        reason = str(first["msg"]).lower()
    kind = str(first["type"])
    code = (
        "invalid_type"
        if kind.endswith("_type") or len(alternatives) > 1
        else "missing_field"
        if kind == "missing"
        else "invalid_value"
    )
    return BodyError(f"Invalid '{echo(param)}': {reason}.", code, echo(param))


def _check_token_fields(body: Mapping[str, Any]) -> None:
    values = {field: body[field] for field in TOKEN_FIELDS if field in body}
    if len(set(values.values())) > 1:
        names = " and ".join(values)
        raise BodyError(
            f"{names} differ; engines read different ones, so send one value.",
            "invalid_value",
            next(reversed(values)),
        )


def check_json(kind: str, body: dict[str, Any]) -> bool:
    """Check the known fields of `body` (a `kind` request); remove the ones that are null.

    Returns whether `body` changed (nulls removed). Raises BodyError.
    """
    _check_spelling(body, _KNOWN_NAMES[kind], "")
    options = body.get("stream_options")
    if isinstance(options, dict):
        _check_spelling(options, _STREAM_OPTION_NAMES, "stream_options.")
    try:
        _VALIDATORS[kind].validate_python(body)
    except ValidationError as error:
        raise _type_error(error) from None
    known = JSON_FIELDS[kind]
    nulls = [key for key, value in body.items() if value is None and key in known]
    for key in nulls:
        del body[key]
    _check_token_fields(body)
    return bool(nulls)


def check_defaults(kind: str, defaults: Mapping[str, Any]) -> None:
    """Check the fields a route adds to a `kind` request as a client's fields.

    A null is refused rather than removed: a default of nothing is a mistake.
    Raises BodyError.
    """
    for key, value in defaults.items():
        if value is None:
            raise BodyError(f"'{key}' is null; leave it out instead.", "invalid_value", key)
    check_json(kind, {**defaults, "model": "-"})


def check_form(parts: Iterable[Part]) -> dict[str, Any]:
    """The text fields of an audio upload (`name[]` fields as lists), checked.

    `file` must be a file part, the known text fields text parts. Raises BodyError.
    """
    fields: dict[str, Any] = {}
    for part in parts:
        name = part.name
        if (name == FILE_FIELD) != (part.filename is not None) and (
            name == FILE_FIELD or name in FORM_FIELDS
        ):
            kind = "a file part (with a filename)" if name == FILE_FIELD else "a text field"
            raise BodyError(f"'{name}' must be {kind}.", "invalid_type", name)
        if part.filename is not None:
            continue
        try:
            text = part.data.decode("utf-8")
        except UnicodeDecodeError:
            raise BodyError(
                f"The field '{echo(name)}' is not valid UTF-8.", "invalid_encoding", echo(name)
            ) from None
        if name.endswith("[]"):
            fields.setdefault(name, []).append(text)
        else:
            fields[name] = text
    try:
        _FORM_VALIDATOR.validate_python(fields)
    except ValidationError as error:
        raise _type_error(error) from None
    return fields
