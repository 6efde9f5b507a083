"""The stored form: every record made writable, a fixed point, kept as is when it already was."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from flm_gateway.core.severity import Severity
from flm_gateway.state.chain import link
from flm_gateway.state.store import (
    AuditEvent,
    BlockRecord,
    RecordRefused,
    canonical_json,
)
from flm_gateway.state.stored import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_DETAILS_CHARS,
    MAX_FIELD_CHARS,
    encodable,
    stored_block,
    stored_counter,
    stored_details,
    stored_event,
)


class Opaque:
    def __repr__(self) -> str:
        return "<opaque \udcff>"


class NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no")


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    return loop


KEPT = None
"""The expected stored form is the input itself."""

DETAILS: list[tuple[str, Any, dict[str, Any] | None]] = [
    ("plain JSON is kept", {"a": [1, 2.5, None, True], "b": {"c": "é😀"}}, KEPT),
    ("a byte that was not UTF-8", {"path": "/x\udcff"}, {"path": "/x\\xff"}),
    ("a lone surrogate from JSON", {"model": "\ud800a"}, {"model": "\\ud800a"}),
    ("a surrogate in a key", {"k\udc80": 1}, {"k\\x80": 1}),
    ("int64 bounds kept", {"lo": INT64_MIN, "hi": INT64_MAX}, KEPT),
    ("beyond int64", {"n": 2**64}, {"n": str(2**64)}),
    ("beyond 4300 digits", {"n": 10**5000}, {"n": f"<{(10**5000).bit_length()}-bit integer>"}),
    ("NaN and infinities", {"a": math.nan, "b": -math.inf}, {"a": "nan", "b": "-inf"}),
    ("bytes", {"b": b"ok\xff"}, {"b": "ok\\xff"}),
    ("a tuple", {"t": (1, "x")}, {"t": [1, "x"]}),
    ("a set", {"s": {3}}, {"s": "{3}"}),
    ("an object with a bad repr", {"o": Opaque()}, {"o": "<opaque \\xff>"}),
    ("an object without one", {"o": NoRepr()}, {"o": "<NoRepr without a repr>"}),
    # as json.dumps writes such keys (it cannot sort them mixed)
    (
        "keys of other types",
        {2: "a", None: "b", True: "c", 2.5: "d"},
        {"2": "a", "null": "b", "true": "c", "2.5": "d"},
    ),
    ("a tuple key", {(1, 2): "x"}, {"(1, 2)": "x"}),
    ("a StrEnum value", {"sev": Severity.HIGH}, {"sev": "high"}),
]


@pytest.mark.parametrize(("name", "details", "expected"), DETAILS, ids=[d[0] for d in DETAILS])
def test_details_become_json_a_store_can_take(
    name: str, details: dict[Any, Any], expected: dict[str, Any] | None
) -> None:
    stored = stored_details(details)
    assert stored == (details if expected is KEPT else expected)
    text = canonical_json(stored)
    text.encode()  # UTF-8 can encode it: SQLite and Redis can store it
    assert json.loads(text) == stored  # standard JSON, read back as it was
    assert stored_details(stored) == stored  # a fixed point


def test_plain_details_keep_their_canonical_text() -> None:
    """What every gateway wrote before keeps its exact text (and so its hash)."""
    details = {"path": "/v1/x", "status": 401, "ratio": 0.5, "tags": ["a"], "nested": {"n": None}}
    assert canonical_json(stored_details(details)) == canonical_json(details)


def test_deep_and_cyclic_details_are_cut_at_a_marker() -> None:
    deep: Any = "bottom"
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    stored = stored_details({"deep": deep, "loop": _cyclic()})
    assert f"<nested deeper than {MAX_DEPTH} levels>" in canonical_json(stored)
    assert stored_details(stored) == stored


@pytest.mark.parametrize("char", ["a", '"', "\x01", "😀"])
def test_huge_details_are_truncated_into_a_stable_form(char: str) -> None:
    stored = stored_details({"body": char * (MAX_DETAILS_CHARS * 3)})
    assert set(stored) == {"truncated", "chars"}
    assert stored["chars"] > MAX_DETAILS_CHARS
    assert len(canonical_json(stored)) <= MAX_DETAILS_CHARS
    assert stored_details(stored) == stored  # not truncated again


def test_details_that_are_not_a_mapping_are_kept_under_value() -> None:
    assert stored_details(["a", 1]) == {"value": ["a", 1]}


def test_event_fields_are_made_storable() -> None:
    event = AuditEvent(
        "type\udcff",
        "high",  # type: ignore[arg-type]  # a severity given as its value
        ts=math.nan,
        ip="x" * (MAX_FIELD_CHARS * 2),
        key_id=None,
        request_id="r\ud800",
        listener=7,  # type: ignore[arg-type]
        actor="gateway",
        details={"n": 2**80},
    )
    stored = stored_event(event)
    assert stored.type == "type\\xff"
    assert stored.severity is Severity.HIGH
    assert math.isfinite(stored.ts)
    assert stored.ip is not None and len(stored.ip) == MAX_FIELD_CHARS and stored.ip[-1] == "…"
    assert stored.key_id is None and stored.request_id == "r\\ud800" and stored.listener == "7"
    assert stored.details == {"n": str(2**80)}
    assert stored_event(stored) == stored


def test_an_event_without_a_severity_has_no_stored_form() -> None:
    bad = AuditEvent("x", "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        stored_event(bad)
    with pytest.raises(RecordRefused) as raised:
        link([AuditEvent("ok"), bad], None, None)
    assert raised.value.cause == "ValueError"


def test_link_hashes_the_stored_form() -> None:
    (record,) = link([AuditEvent("t", details={"p": "\udcff"})], None, None)
    assert record.event.details == {"p": "\\xff"}
    (again,) = link([record.event], None, None)
    assert again.hash == record.hash


def test_counters_and_blocks() -> None:
    assert stored_counter("usage:\udcff", 2**70) == ("usage:\\xff", INT64_MAX)
    assert stored_counter("c", -(2**70)) == ("c", INT64_MIN)
    block = BlockRecord("10.0.0.0/8", "r\udcff", "auto", math.nan, math.nan, 2**70)
    stored = stored_block(block)
    assert stored.reason == "r\\xff" and stored.strikes == INT64_MAX
    assert math.isfinite(stored.created_at)
    assert stored.expires_at == stored.created_at  # NaN: inactive, as in memory
    assert not block.active_at(stored.created_at) and not stored.active_at(stored.created_at)
    forever = stored_block(BlockRecord("10.0.0.0/8", "r", "auto", 1.0, math.inf))
    assert forever.expires_at is None


def test_encodable_escapes_only_surrogates() -> None:
    assert encodable("plain é\n\x1b") == "plain é\n\x1b"
    assert encodable("\udc80\ud800\udfff") == "\\x80\\ud800\\udfff"
