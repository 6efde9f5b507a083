"""Records in a form every store can take; the audit chain hashes exactly this form.

A record that a store refuses deterministically (retrying can never help) must not
hold the write queue (see `flm_gateway.state.refusals`), and must not be lost
either: so each record is turned into its stored form here, by the backends, just
before it is written: audit events in `chain.link` (the hash and MAC are computed
over the stored form, so `verify` checks what is stored), blocks in `put_block`,
counters in `add_counters`. What changes:
- **text**: a lone surrogate (a byte that was not UTF-8, held by `surrogateescape`;
  a `\\ud800` escape in a client's JSON) is escaped as `\\xff` / `\\ud800`: UTF-8
  cannot encode it, so SQLite and Redis would refuse the write. Top-level fields
  (type, ip, key id, request id, listener, actor, counter names, block reasons) are
  cut to `MAX_FIELD_CHARS`, ending with `…`.
- **numbers**: a counter delta or a block's strikes is clamped to the 64-bit range
  of SQLite and Redis; in event details, an integer beyond that range becomes its
  decimal text (Python will not even write one past 4300 digits) and a float that is
  not finite its name (`nan`, `inf`: not JSON). A timestamp that is not a finite
  number becomes the time of writing (SQLite stores NaN as NULL).
- **details**: JSON types only. A mapping's keys become text (as `json` would: `1`
  -> `"1"`, `None` -> `"null"`), tuples lists, bytes their escaped text, anything
  else its escaped `repr`; containers nested deeper than `MAX_DEPTH` become a
  marker; details whose canonical JSON is longer than `MAX_DETAILS_CHARS` become
  `{"truncated": <its first 8192 characters>, "chars": <its length>}`. So a record
  stays under 1 MB even as Redis stores it (ASCII JSON: a character may take 12),
  the least Redis's `proto-max-bulk-len` can be set to (a value over it makes Redis
  drop the connection: a refusal that looks like an outage).

Details made only of JSON types within these bounds are kept as they are. The stored
form is a fixed point: storing it again changes nothing, so a record read back and
hashed again (`verify`) gives the same hash.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from flm_gateway.core.severity import Severity
from flm_gateway.state.store import AuditEvent, BlockRecord, canonical_json

MAX_FIELD_CHARS = 1024
MAX_DETAILS_CHARS = 65536
TRUNCATED_CHARS = MAX_DETAILS_CHARS // 8
"""What `truncated` keeps: even with every character escaped (6 times longer in JSON),
the replacement stays under MAX_DETAILS_CHARS, so it is itself stored as it is."""
MAX_DEPTH = 32
MAX_REPR_CHARS = 200
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def encodable(value: str) -> str:
    """`value` with each lone surrogate escaped (`\\xff` for a byte that was not UTF-8):
    text UTF-8 can encode. Everything else is kept."""
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return "".join(_escape(char) if "\ud800" <= char <= "\udfff" else char for char in value)
    return value


def _escape(surrogate: str) -> str:
    code = ord(surrogate)
    if 0xDC80 <= code < 0xDD00:  # how surrogateescape holds a byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def cut(value: str, limit: int) -> str:
    """`value` at most `limit` characters long, ending with `…` if it was cut."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def stored_text(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """Any value as text a store can take (see the module docstring)."""
    text = str.__str__(value) if isinstance(value, str) else str(value)
    return cut(encodable(text), limit)


def clamped(value: int) -> int:
    """`value` within the 64-bit range of SQLite's and Redis's integers."""
    return min(max(int(value), INT64_MIN), INT64_MAX)


def _finite(value: float | None, default: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]  # anything: that is the point
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default


def stored_event(event: AuditEvent) -> AuditEvent:
    """`event` in its stored form (see the module docstring). Raises for what it cannot
    fix (a severity that is none); the caller then records `audit.unwritable` instead."""
    return AuditEvent(
        type=stored_text(event.type),
        severity=Severity(event.severity),
        ts=_finite(event.ts, time.time()),
        ip=_optional_text(event.ip),
        key_id=_optional_text(event.key_id),
        request_id=_optional_text(event.request_id),
        listener=_optional_text(event.listener),
        actor=_optional_text(event.actor),
        details=stored_details(event.details),
    )


def _optional_text(value: object) -> str | None:
    return None if value is None else stored_text(value)


def stored_details(details: object) -> dict[str, Any]:
    """Details as JSON types within bounds (see the module docstring)."""
    if isinstance(details, Mapping):
        stored = _json_mapping(details, 0)
    else:
        stored = {"value": _json_value(details, 0)}
    text = canonical_json(stored)
    if len(text) > MAX_DETAILS_CHARS:
        return {"truncated": cut(text, TRUNCATED_CHARS), "chars": len(text)}
    return stored


def _json_mapping(value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    return {_json_key(key): _json_value(item, depth + 1) for key, item in value.items()}


def _json_key(key: object) -> str:
    if isinstance(key, str):
        return encodable(str.__str__(key))
    if key is None or isinstance(key, int | float):
        value = _json_value(key, 0)  # then as json.dumps writes such a key: 1 -> "1"
        return value if isinstance(value, str) else canonical_json(value)
    return _repr_text(key)


def _json_value(value: object, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return encodable(str.__str__(value))
    if isinstance(value, int):
        number = int(value)
        if INT64_MIN <= number <= INT64_MAX:
            return number
        bits = number.bit_length()
        return str(number) if bits <= 1024 else f"<{bits}-bit integer>"
    if isinstance(value, float):
        real = float(value)
        return real if math.isfinite(real) else repr(real)
    if isinstance(value, bytes | bytearray):
        return encodable(bytes(value).decode("utf-8", "surrogateescape"))
    if not isinstance(value, Mapping | list | tuple):
        return _repr_text(value)
    if depth >= MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH} levels>"
    if isinstance(value, Mapping):
        return _json_mapping(value, depth)
    return [_json_value(item, depth + 1) for item in value]


def _repr_text(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} without a repr>"
    return cut(encodable(text), MAX_REPR_CHARS)


def stored_counter(name: str, delta: int) -> tuple[str, int]:
    """A counter's name and delta in their stored form."""
    return stored_text(name), clamped(delta)


def stored_block(block: BlockRecord) -> BlockRecord:
    """`block` in its stored form. An expiry that is NaN is stored as already expired (what
    `active_at` makes of it in memory; SQLite would store it as NULL: never expires), one
    that is infinite as never."""
    created_at = _finite(block.created_at, time.time())
    expires_at = block.expires_at
    if expires_at is not None:
        expires_at = None if expires_at == math.inf else _finite(expires_at, created_at)
    return BlockRecord(
        cidr=stored_text(block.cidr),
        reason=stored_text(block.reason),
        source=stored_text(block.source),
        created_at=created_at,
        expires_at=expires_at,
        strikes=clamped(block.strikes),
    )
