"""The one JSON reader for request bodies: a body is read only if every parser reads it alike.

`read_object(raw)` returns the body's JSON object, or raises `BodyError` (400) for
input that Python's `json`, Go's `encoding/json` (Ollama), pydantic (vLLM),
nlohmann::json (llama.cpp) or JavaScript (LM Studio) could read differently:
- not UTF-8 (`invalid_encoding`): a byte order mark, UTF-16/32 (Python's
  `json.loads(bytes)` detects them, Go does not), invalid bytes (Go reads U+FFFD);
- not exactly one JSON object (`invalid_json`), trailing data included;
- the same key twice in any object, or two keys equal under case folding
  (`duplicate_key`): Go matches struct fields case-insensitively, under Unicode
  simple folding (U+212A KELVIN SIGN is `k`, U+017F LONG S is `s`, U+0131 DOTLESS I
  is `i`) and the last match wins, while Python keeps both spellings apart;
- `NaN`/`Infinity` and numbers no float64 holds (`invalid_number`): `1e400` is
  `inf` to Python and an error to Go;
- lone surrogate escapes such as `"\\ud800"` (`invalid_json`): Python keeps them,
  Go reads U+FFFD;
- nesting deeper than `MAX_DEPTH` (`json_too_deep`), never a RecursionError.
Work is linear in the body: C-speed scans decide the rare slow paths (a surrogate
escape, more brackets than `MAX_DEPTH`), and the depth walk visits each container
once.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from typing import Any, NoReturn

from flm_gateway.bodies import BodyError
from flm_gateway.core.text import echo

MAX_DEPTH = 64
"""Objects and arrays nested deeper than this are refused (a chat body uses about 6)."""

# A cheap trigger of the surrogate check; a hit only means "look closer", never a refusal.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def fold_key(key: str) -> str:
    """`key` as Go's encoding/json compares field names: case-folded (Python's full
    folding also equates `ß` and `ss`, which Go does not: refusing more is safe)."""
    folded = key.casefold()
    return folded if folded.isascii() else folded.replace("\u0131", "i")


def _duplicate(pairs: list[tuple[str, Any]]) -> NoReturn:
    seen: dict[str, str] = {}
    for key, _ in pairs:
        first = seen.get(fold_key(key))
        if first is None:
            seen[fold_key(key)] = key
            continue
        if first == key:
            message = (
                f"The key '{echo(key)}' appears twice in one object; parsers disagree on "
                "which one counts."
            )
        else:
            message = (
                f"The keys '{echo(first)}' and '{echo(key)}' are equal under case "
                "folding; Go's encoding/json (Ollama) reads them as one field, other parsers "
                "as two."
            )
        raise BodyError(message, "duplicate_key", echo(key))
    raise AssertionError("no duplicate among the keys")  # pragma: no cover


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    # ASCII keys (nearly all) fold by casefold() alone; fold_key for the others.
    folded = {key.casefold() if key.isascii() else fold_key(key) for key in obj}
    if len(obj) == len(pairs) and len(folded) == len(obj):
        return obj
    _duplicate(pairs)


def _constant(name: str) -> NoReturn:
    raise BodyError(f"{name} is not a JSON number.", "invalid_number")


def _checked_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BodyError(
            f"The number {echo(text, 40)} is out of range (no float64 holds it).", "invalid_number"
        )
    return value


def _too_deep(value: Any) -> bool:
    """True if `value` nests containers deeper than MAX_DEPTH (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _deep_error() -> BodyError:
    return BodyError(f"The JSON body is nested deeper than {MAX_DEPTH} levels.", "json_too_deep")


# Stateless, so built once (json.loads with hooks builds a decoder per call, ~2 us).
# parse_float runs for every float (a chat body has one or two): Python reads 1e400 as
# inf, Go refuses it. Integers need no check here: Python reads them exactly, and the
# known integer fields have ranges (`schema`).
_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_constant=_constant, parse_float=_checked_float
)


def read_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in `raw`, read the one way every engine's parser reads it."""
    if raw.startswith(codecs.BOM_UTF8):
        raise BodyError(
            "The body starts with a byte order mark; send UTF-8 JSON without one.",
            "invalid_encoding",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(
            "The body is not valid UTF-8 (UTF-16 and UTF-32 are not accepted).", "invalid_encoding"
        ) from None
    if "\x00" in text[:4]:
        raise BodyError(
            "The body is not valid UTF-8 (UTF-16 and UTF-32 are not accepted).", "invalid_encoding"
        )
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise _deep_error() from None
    except BodyError:
        raise
    except ValueError:
        raise BodyError("The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(value, dict):
        raise BodyError("The request body must be a JSON object.", "invalid_json")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(value):
        raise _deep_error()
    if _SURROGATE_ESCAPE.search(raw) is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError(
                "The body escapes a lone UTF-16 surrogate (such as \\ud800); parsers "
                "read it differently.",
                "invalid_json",
            ) from None
    return value
