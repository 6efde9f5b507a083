"""flm_gateway.core.text: control and reordering characters escaped, echoes bounded."""

from __future__ import annotations

import pytest

from flm_gateway.core.text import ECHO_LIMIT, clip, echo, printable, printable_lines


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
        # bytes that were not UTF-8, as mitmproxy decodes a path (surrogateescape)
        (b"/v1/\xff\xfe".decode("utf-8", "surrogateescape"), "/v1/\\xff\\xfe"),
        ("lone \ud800", "lone \\ud800"),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("tag\U000e0041\U000e007f", "tag\\U000e0041\\U000e007f"),  # invisible "ASCII smuggling"
        ("soft\xadhyphen nb\xa0space", "soft\\xadhyphen nb\\xa0space"),
        ("private\ue000", "private\\ue000"),
        ("tab\tstop", "tab\\x09stop"),
    ],
)
def test_printable_escapes_controls_and_reordering(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert shown.isprintable()
    shown.encode("utf-8")  # storable: no lone surrogate survives


def test_printable_lines_keeps_line_feeds_and_tabs_only() -> None:
    text = "Traceback:\n\tFile x\r\n\x1b[2Jboom\u202e"
    assert printable_lines(text) == "Traceback:\n\tFile x\\x0d\n\\x1b[2Jboom\\u202e"
    assert printable_lines("plain") == "plain"


def test_echo_bounds_length_before_escaping() -> None:
    long = "m" * 10_000_000
    echoed = echo(long)
    assert echoed == "m" * ECHO_LIMIT + "…"
    assert echo("short\x1b") == "short\\x1b"
    assert echo("x" * ECHO_LIMIT) == "x" * ECHO_LIMIT


def test_clip() -> None:
    assert clip("abcdef", 3) == "abc…"
    assert clip("abc", 3) == "abc"
