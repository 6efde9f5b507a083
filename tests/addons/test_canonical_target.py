from __future__ import annotations

import pytest
from mitmproxy import http

from flm_gateway.addons.canonical_target import CanonicalTarget
from flm_gateway.proxy.flow_meta import SECURITY_REJECTED, TARGET_ORIGINAL
from flm_gateway.security.events import events_of
from tests.support.flows import error_of, make_flow


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("/v1/%63hat/completions", "/v1/chat/completions"),
        ("//api//%70ull?x=%2f", "/api/pull?x=%2f"),
        ("/v1/x/../models", "/v1/models"),
        ("/%68ealthz", "/healthz"),
    ],
)
def test_the_flow_carries_the_canonical_target(target: str, canonical: str) -> None:
    flow = make_flow("GET", target)
    CanonicalTarget().requestheaders(flow)
    assert flow.response is None
    assert flow.request.path == canonical
    assert TARGET_ORIGINAL.require(flow) == target


def test_a_canonical_target_is_left_alone() -> None:
    flow = make_flow("POST", "/v1/chat/completions?x=1")
    CanonicalTarget().requestheaders(flow)
    assert flow.response is None and flow.request.path == "/v1/chat/completions?x=1"
    assert not TARGET_ORIGINAL.is_set(flow)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/api%2Fpull", "encoded_slash"),
        ("/api/%2e%2e/pull", "encoded_dot_segment"),
        ("/api/%2570ull", "encoded_percent"),
        ("/api/pull%00", "control_character"),
        ("/api\\pull", "backslash"),
        ("/api/pull;x", "path_parameter"),
        ("*", "not_a_path"),
    ],
)
def test_refusals_are_400_in_openai_shape_and_recorded(target: str, reason: str) -> None:
    flow = make_flow("POST", target)
    CanonicalTarget().requestheaders(flow)
    status, error = error_of(flow)
    assert (status, error["code"], error["type"]) == (400, "invalid_path", "invalid_request_error")
    assert target not in error["message"]
    assert SECURITY_REJECTED.require(flow) == "invalid_path"
    [event] = events_of(flow)
    assert (event.type, event.offence, event.details["reason"]) == ("path.refused", None, reason)


def test_absolute_form_becomes_origin_form() -> None:
    flow = make_flow("POST", "/api/%70ull")
    flow.request.authority = "127.0.0.1:11435"
    CanonicalTarget().requestheaders(flow)
    assert flow.request.authority == "" and flow.request.path == "/api/pull"


def test_an_answered_flow_is_left_alone() -> None:
    flow = make_flow("GET", "/api%2Fpull")
    flow.response = http.Response.make(200, b"decoy")
    CanonicalTarget().requestheaders(flow)
    assert flow.response.content == b"decoy" and flow.request.path == "/api%2Fpull"
    assert not events_of(flow)
