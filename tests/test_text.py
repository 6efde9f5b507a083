"""flm_gateway.text: control and reordering characters escaped, echoes bounded."""

from __future__ import annotations

import pytest

from flm_gateway.text import ECHO_LIMIT, echo, printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain /v1/models", "plain /v1/models"),
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),
        ("a\r\nforged line", "a\\x0d\\x0aforged line"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("iso\u2066late", "iso\\u2066late"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("日本語 é", "日本語 é"),
    ],
)
def test_printable_escapes_controls_and_reordering(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_echo_bounds_length_before_escaping() -> None:
    long = "m" * 10_000_000
    echoed = echo(long)
    assert echoed == "m" * ECHO_LIMIT + "…"
    assert echo("short\x1b") == "short\\x1b"
    assert echo("x" * ECHO_LIMIT) == "x" * ECHO_LIMIT
