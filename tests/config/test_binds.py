"""config.binds: what a bind covers, which pairs are ambiguous, and the socket host."""

from __future__ import annotations

import pytest

from flm_gateway.config.binds import bind_host_problem, binds_overlap, coverage, listen_host
from flm_gateway.proxy.mitm_listeners import spec_for

OVERLAP = [
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.2", False),
    ("0.0.0.0", "127.0.0.1", True),
    ("0.0.0.0", "192.0.2.1", True),
    ("0.0.0.0", "0.0.0.0", True),
    ("0.0.0.0", "::1", False),  # IPv4 only
    ("0.0.0.0", "::", True),  # [::] is dual-stack
    ("::", "127.0.0.1", True),
    ("::", "::1", True),
    ("::", "::", True),
    ("::1", "::2", False),
    ("::1", "127.0.0.1", False),
    ("localhost", "127.0.0.1", True),
    ("localhost", "::1", True),
    ("localhost", "127.0.0.2", False),
    ("localhost", "0.0.0.0", True),
    ("localhost", "localhost", True),
    ("redirect.example", "redirect.example", True),  # names: side servers, redirects
    ("redirect.example", "0.0.0.0", True),  # a name may resolve to any address
    ("redirect.example", "127.0.0.1", False),
    ("redirect.example", "other.example", False),
]


@pytest.mark.parametrize(("a", "b", "expected"), OVERLAP)
def test_binds_overlap_on_the_same_port_only(a: str, b: str, expected: bool) -> None:
    assert binds_overlap((a, 8088), (b, 8088)) is expected
    assert binds_overlap((b, 8088), (a, 8088)) is expected
    assert binds_overlap((a, 8088), (b, 8089)) is False


def test_coverage() -> None:
    assert coverage("::") == {("4", "*"), ("6", "*")}
    assert coverage("0.0.0.0") == {("4", "*")}
    assert coverage("localhost") == {("4", "127.0.0.1"), ("6", "::1")}
    assert coverage("::1") == {("6", "::1")}


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("127.0.0.1", None),
        ("::1", None),
        ("::", None),
        ("0.0.0.0", None),
        ("localhost", None),
        ("LOCALHOST", "not an IP address"),
        ("gateway.lan", "not an IP address"),
        ("127.1", "not an IP address"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("fe80::1%eth0", "zone"),
    ],
)
def test_bind_hosts(host: str, problem: str | None) -> None:
    found = bind_host_problem(host)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_the_socket_host_and_mode_spec() -> None:
    assert listen_host("::") is None
    assert listen_host("::1") == "::1"
    # mitmproxy splits at the last colon and hands the host to asyncio: no brackets.
    assert spec_for(("::1", 8088)) == "reverse:http://127.0.0.1:9@::1:8088"
    assert spec_for(("::", 8088)) == "reverse:http://127.0.0.1:9@8088"
    assert spec_for(("127.0.0.1", 8088)) == "reverse:http://127.0.0.1:9@127.0.0.1:8088"


def test_mitmproxy_reads_the_specs_as_meant() -> None:
    from mitmproxy.proxy.mode_specs import ProxyMode

    v6 = ProxyMode.parse(spec_for(("::1", 8088)))
    assert (v6.listen_host(), v6.listen_port()) == ("::1", 8088)
    dual = ProxyMode.parse(spec_for(("::", 8088)))
    assert (dual.listen_host(""), dual.listen_port()) == ("", 8088)  # every address
