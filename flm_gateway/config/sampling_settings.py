"""`routes[].defaults`: a route's model profile, the request fields it fills in.

The typed keys are OpenAI's sampling fields of chat and completions requests (the
generation subset of LiteLLM's OpenAI params), bounded as OpenAI documents them,
so `temprature` or `max_tokens: -5` is a config error like any misspelt key.
Engine-specific knobs (llama.cpp's `top_k`, `min_p`, `repeat_penalty`, `mirostat`,
`n_predict`...) go under `extra:`, a map of name -> JSON value sent as written.
Rules that need the client schema (`extra` may not redefine a typed key, its
values are checked like a client's fields) are in `config/semantic.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, JsonValue, PrivateAttr, field_validator, model_validator

from flm_gateway.bodies.schema import MAX_CHOICES, MAX_TOKENS_CEILING
from flm_gateway.config.types import StrictModel

CHAT_ONLY_DEFAULTS = frozenset({"logprobs", "top_logprobs"})
"""Typed defaults sent on chat requests only: on /v1/completions `logprobs` is a count."""

Penalty = Annotated[float, Field(ge=-2, le=2)]
TokenCount = Annotated[int, Field(ge=1, le=MAX_TOKENS_CEILING)]
TokenId = Annotated[str, Field(pattern=r"^[0-9]+$")]


class ResponseFormat(StrictModel):
    """OpenAI's `response_format`: plain text, any JSON object, or JSON matching a schema."""

    model_config = ConfigDict(strict=True)

    type: Literal["text", "json_object", "json_schema"] = Field(
        description="text, json_object or json_schema (then json_schema is required)."
    )
    json_schema: dict[str, JsonValue] | None = Field(
        None,
        description="With type json_schema: {name, schema, strict}, as OpenAI documents it.",
    )

    @model_validator(mode="after")
    def _schema_goes_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is set with type: json_schema, and only then")
        return self


class RouteDefaults(StrictModel):
    """Request fields a route fills in where the client left them out (a model profile)."""

    model_config = ConfigDict(strict=True)  # a client's types: "0.2" is not 0.2, true not 1

    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature, 0-2.")
    top_p: float | None = Field(
        None, ge=0, le=1, description="Nucleus sampling: the probability mass kept, 0-1."
    )
    max_tokens: TokenCount | None = Field(
        None,
        description=(
            "Tokens generated per choice, at least 1. max_tokens and max_completion_tokens are "
            "one setting: a default for either applies only if the client sent neither (nor "
            "llama.cpp's n_predict); if both are set they must agree."
        ),
    )
    max_completion_tokens: TokenCount | None = Field(
        None, description="OpenAI's newer name for max_tokens (vLLM reads it first)."
    )
    n: int | None = Field(
        None, ge=1, le=MAX_CHOICES, description="Choices generated per request, 1-128."
    )
    stop: str | list[str] | None = Field(None, description="A stop sequence, or a list of up to 4.")
    presence_penalty: Penalty | None = Field(
        None, description="Penalty on tokens already present, -2 to 2."
    )
    frequency_penalty: Penalty | None = Field(
        None, description="Penalty by how often a token was used, -2 to 2."
    )
    seed: int | None = Field(
        None, ge=-(2**63), lt=2**63, description="Seed for reproducible sampling (an int64)."
    )
    logit_bias: dict[TokenId, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None, description="Token id -> bias, -100 to 100."
    )
    logprobs: bool | None = Field(
        None, description="Return the log probabilities of the output tokens (chat only)."
    )
    top_logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="Most likely tokens returned per position, 0-20 (chat only; with logprobs).",
    )
    response_format: ResponseFormat | None = Field(
        None, description="The output format: {type: text | json_object | json_schema}."
    )
    extra: dict[str, JsonValue] = Field(
        default_factory=dict,
        description=(
            "Engine-specific fields (top_k, min_p, repeat_penalty, mirostat, n_predict...), "
            "sent as written where the client left them out; checked like a client's fields, "
            "and may not redefine a typed key."
        ),
    )
    _chat_fields: dict[str, Any] = PrivateAttr(default_factory=dict)
    _other_fields: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("stop")
    @classmethod
    def _up_to_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 4:
            raise ValueError(f"{len(value)} stop sequences; OpenAI takes 1 to 4")
        return value

    def model_post_init(self, context: Any, /) -> None:
        # Computed once per validated instance (the model is frozen; build a new one to change it).
        typed = self.model_dump(mode="json", exclude_none=True, exclude={"extra"})
        self._chat_fields = {**self.extra, **typed}
        self._other_fields = {
            k: v for k, v in self._chat_fields.items() if k not in CHAT_ONLY_DEFAULTS
        }

    def fields(self, kind: str) -> Mapping[str, Any]:
        """The body fields a `kind` request (chat, completions, embeddings) gets by default."""
        return self._chat_fields if kind == "chat" else self._other_fields


TYPED_DEFAULTS = frozenset(RouteDefaults.model_fields) - {"extra"}
"""The keys of `defaults` that are OpenAI fields; `extra` may not name them."""
