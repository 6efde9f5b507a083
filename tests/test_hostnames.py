"""hostnames: the strict reader of what a client names as its host, and hosts: entries."""

from __future__ import annotations

import pytest

from flm_gateway.core.hostnames import Authority, host_pattern, parse_authority


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost", Authority("localhost", None, False)),
        ("LocalHost:8088", Authority("localhost", 8088, False)),
        ("localhost.", Authority("localhost", None, False)),
        ("localhost.:80", Authority("localhost", 80, False)),
        ("gw_1.lan-x.example", Authority("gw_1.lan-x.example", None, False)),
        ("127.0.0.1:8088", Authority("127.0.0.1", 8088, True)),
        ("127.0.0.1.", Authority("127.0.0.1", None, True)),
        ("255.255.255.255:65535", Authority("255.255.255.255", 65535, True)),
        ("[::1]:8088", Authority("::1", 8088, True)),
        ("[0:0:0:0:0:0:0:1]", Authority("::1", None, True)),
        ("[2001:DB8::A]:1", Authority("2001:db8::a", 1, True)),
        ("[::ffff:127.0.0.1]", Authority("::ffff:127.0.0.1", None, True)),
        ("a" * 63 + ".example", Authority("a" * 63 + ".example", None, False)),
    ],
)
def test_authorities_a_browser_sends(value: str, expected: Authority) -> None:
    assert parse_authority(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        ":8088",
        "localhost:",
        "localhost:0",
        "localhost:65536",
        "localhost:+1",
        "localhost:1:2",
        "localhost..",
        ".localhost",
        "local host",
        "user@localhost",
        "localhost/x",
        "localhost?x",
        "localhost#x",
        "%6cocalhost",
        "l\u043ecalhost",
        "localhost\x00",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f.0.0.1",
        "127.000.0.1",
        "127.0.0.01",
        "256.0.0.1",
        "a.b.1",
        "::1",
        "[::1",
        "::1]",
        "[::1]]",
        "[[::1]]",
        "[::1%25lo]",
        "[::1%lo]",
        "[fe80::1%eth0]",
        "[1::2::3]",
        "[:::1]",
        "[127.0.0.1]",
        "[localhost]",
        "a" * 64 + ".example",
        "a." * 151,
        "localhost, evil.example",
    ],
)
def test_everything_else_is_refused(value: str) -> None:
    assert parse_authority(value) is None


def test_a_long_value_is_refused_in_linear_time() -> None:
    # Many labels, then a character that fails the match: no backtracking blow-up.
    assert parse_authority("a." * 140 + "!") is None
    assert parse_authority("1." * 140 + "1") is None
    assert parse_authority("[" + ":" * 44 + "]") is None


def test_authority_shown_keeps_brackets() -> None:
    assert Authority("::1", 8088, True).shown() == "[::1]:8088"
    assert Authority("localhost", None, False).shown() == "localhost"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("Gateway.Example.COM.", "gateway.example.com"),
        (" *.Lan ", "*.lan"),
        ("*", "*"),
        ("192.0.2.10", "192.0.2.10"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("2001:db8:0::1", "2001:db8::1"),
        ("gw_1", "gw_1"),
    ],
)
def test_hosts_entries_have_one_spelling(entry: str, expected: str) -> None:
    assert host_pattern(entry) == expected


@pytest.mark.parametrize(
    "entry",
    ["", "bad host", "x:80", "*.10.0.0.1", "127.1", "**.x", "*x.example", "a.*.b", "fe80::1%eth0"],
)
def test_bad_hosts_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        host_pattern(entry)
