"""Hop-by-hop headers of engine answers go everywhere; identity headers on API listeners."""

from __future__ import annotations

from mitmproxy import http

from flm_gateway.addons.response_headers import ResponseHeaders
from flm_gateway.config.listener_settings import ListenerConfig
from tests.ops_flows import routed_flow

DROPIN = ListenerConfig.model_validate(
    {"name": "dropin", "bind": "127.0.0.1:11435", "passthrough": "e1"}
)
ENGINE_HEADERS = {
    "server": "llama.cpp",
    "x-powered-by": "Express",
    "keep-alive": "timeout=5, max=100",
    "connection": "keep-alive, x-engine-trace",
    "x-engine-trace": "abc",
    "content-type": "application/json",
    "x-request-id": "r1",
}


def answered(**metadata: object) -> http.Response:
    flow = routed_flow(**metadata)
    assert flow.response is not None
    flow.response.headers.clear()
    flow.response.headers.update(ENGINE_HEADERS)
    ResponseHeaders().responseheaders(flow)
    return flow.response


def test_api_listeners_drop_hop_by_hop_and_identity_headers() -> None:
    headers = answered().headers
    assert sorted(headers.keys()) == ["content-type", "x-request-id"]


def test_passthrough_keeps_identity_but_not_hop_by_hop() -> None:
    headers = answered(flm__listener=DROPIN).headers
    assert sorted(headers.keys()) == ["content-type", "server", "x-powered-by", "x-request-id"]


def test_connection_close_is_kept_so_the_client_hears_the_close() -> None:
    flow = routed_flow()
    assert flow.response is not None
    flow.response.headers["connection"] = "close, keep-alive"
    ResponseHeaders().responseheaders(flow)
    assert flow.response.headers["connection"] == "close"


def test_gateway_answers_are_left_alone() -> None:
    flow = routed_flow(engine=None)
    assert flow.response is not None
    flow.response.headers["server"] = "x"
    ResponseHeaders().responseheaders(flow)
    assert flow.response.headers["server"] == "x"


def test_names_match_in_any_case_and_repeated_fields_all_go() -> None:
    flow = routed_flow()
    assert flow.response is not None
    flow.response.headers.fields = (
        (b"Server", b"vllm"),
        (b"Content-Type", b"application/json"),
        (b"VIA", b"1.1 engine"),
        (b"via", b"1.1 other"),
        (b"Keep-Alive", b"timeout=5"),
    )
    ResponseHeaders().responseheaders(flow)
    assert flow.response.headers.fields == ((b"Content-Type", b"application/json"),)


def test_a_switching_protocols_answer_keeps_upgrade() -> None:
    flow = routed_flow()
    assert flow.response is not None
    flow.response.status_code = 101
    flow.response.headers.fields = ((b"Upgrade", b"websocket"), (b"Keep-Alive", b"x"))
    ResponseHeaders().responseheaders(flow)
    assert flow.response.headers.fields == ((b"Upgrade", b"websocket"),)
