"""bodies.strict_json: one reading of a JSON body, a table of inputs."""

from __future__ import annotations

import sys

import pytest

from flm_gateway.bodies import BodyError
from flm_gateway.bodies.strict_json import MAX_DEPTH, fold_key, read_object


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"a":1,"a":2}', "duplicate_key"),
        (b'{"a":1,"A":2}', "duplicate_key"),
        ('{"k":1,"\u212a":2}'.encode(), "duplicate_key"),
        ('{"s":1,"\u017f":2}'.encode(), "duplicate_key"),
        ('{"i":1,"\u0131":2}'.encode(), "duplicate_key"),
        (b'{"x":[{"b":1},{"b":1,"B":2}]}', "duplicate_key"),
        (b'{"a":NaN}', "invalid_number"),
        (b'{"a":Infinity}', "invalid_number"),
        (b'{"a":-1e999}', "invalid_number"),
        (b"\xef\xbb\xbf{}", "invalid_encoding"),
        ("{}".encode("utf-16"), "invalid_encoding"),
        ("{}".encode("utf-32-be"), "invalid_encoding"),
        (b'{"a":"\xc0\xaf"}', "invalid_encoding"),
        (b'{"a":"\\udc00"}', "invalid_json"),
        (b'{"a":"\\ud800x"}', "invalid_json"),
        (b"{}{}", "invalid_json"),
        (b"[]", "invalid_json"),
        (b"", "invalid_json"),
        (b'"{}"', "invalid_json"),
        (b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "json_too_deep"),
        (b"[" * 1_000_000, "json_too_deep"),
    ],
)
def test_refused(raw: bytes, code: str) -> None:
    with pytest.raises(BodyError) as refused:
        read_object(raw)
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (
            b' {"a": 1.5e300, "b": -0, "c": 12345678901234567890} ',
            {"a": 1.5e300, "b": 0, "c": 12345678901234567890},
        ),
        (b'{"e":"\\ud83d\\ude00","ss":1,"s":2}', {"e": "\U0001f600", "ss": 1, "s": 2}),
        (b'{"a":[{"b":1},{"b":2}]}', {"a": [{"b": 1}, {"b": 2}]}),
        (b'{"x":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}", None),
    ],
)
def test_read(raw: bytes, value: object) -> None:
    parsed = read_object(raw)
    if value is not None:
        assert parsed == value


def test_duplicate_names_the_second_key() -> None:
    with pytest.raises(BodyError) as refused:
        read_object(b'{"model":"a","Model":"b"}')
    assert refused.value.param == "Model"


def test_fold_equates_every_case_pair_go_equates() -> None:
    """Go folds a rune with its simple upper and lower case mappings (unicode.SimpleFold
    orbits); fold_key must equate each such pair (it may equate more)."""
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code < 0xE000:
            continue
        char = chr(code)
        for other in (char.lower(), char.upper(), char.title()):
            if len(other) == 1:
                assert fold_key(char) == fold_key(other), (hex(code), other)
