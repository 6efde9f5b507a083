"""`upstream.point_at` and `strip_client_credentials`: what leaves for the engine."""

from __future__ import annotations

from mitmproxy.test import tutils

from flm_gateway.routing.upstream import point_at, strip_client_credentials
from tests.support.flows import BASE_CONFIG, RuntimeFactory, make_flow


def test_every_client_credential_goes_in_any_case_and_the_rest_keeps_its_order() -> None:
    request = tutils.treq()
    request.headers.fields = (
        (b"Host", b"127.0.0.1:9"),
        (b"AUTHORIZATION", b"Bearer client"),
        (b"X-Trace", b"1"),
        (b"cookie", b"a=1"),
        (b"Cookie", b"b=2"),
        (b"x-api-key", b"k"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Accept", b"*/*"),
    )
    strip_client_credentials(request)
    assert request.headers.fields == (
        (b"Host", b"127.0.0.1:9"),
        (b"X-Trace", b"1"),
        (b"Accept", b"*/*"),
    )


def test_headers_without_credentials_are_left_alone() -> None:
    request = tutils.treq()
    before = request.headers.fields
    strip_client_credentials(request)
    assert request.headers.fields is before


async def test_the_engine_gets_its_own_host_once_whatever_the_client_sent(
    make_runtime: RuntimeFactory,
) -> None:
    engines = (
        "  - {name: six, kind: vllm, url: 'http://[::1]:18003'}\n"
        "  - {name: plain, kind: vllm, url: 'http://engine.test:80/base'}\nroutes:"
    )
    runtime = make_runtime(BASE_CONFIG.replace("routes:", engines, 1))
    cases = [
        ("alpha", ((b"Host", b"rebind.attacker.example"),), "127.0.0.1:18001"),
        ("alpha", ((b"Host", b"a"), (b"host", b"b")), "127.0.0.1:18001"),
        ("alpha", (), "127.0.0.1:18001"),  # HTTP/1.0 without Host
        ("six", ((b"Host", b"[::1]:8088"),), "[::1]:18003"),
        ("plain", ((b"Host", b"x"),), "engine.test"),
    ]
    for name, fields, expected in cases:
        flow = make_flow()
        flow.request.headers.fields = fields
        point_at(flow, runtime.directory.get(name), "/v1/chat/completions")
        assert flow.request.headers.get_all("host") == [expected], name
    absolute = make_flow()
    absolute.request.authority = "rebind.attacker.example:8088"
    point_at(absolute, runtime.directory.get("alpha"), "/v1/models")
    assert absolute.request.authority == "127.0.0.1:18001"
    assert absolute.request.host_header == "127.0.0.1:18001"
    assert (absolute.request.host, absolute.request.port) == ("127.0.0.1", 18001)
