"""Engine error answers in OpenAI's error shape on API listeners; passthrough unchanged."""

from __future__ import annotations

import gzip
import json

import pytest
from mitmproxy import http

from flm_gateway.addons.engine_errors import MAX_ERROR_BODY, EngineErrors
from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.proxy.flow_meta import ENGINE_ERRORS_PENDING
from tests.ops_flows import routed_flow

DROPIN = ListenerConfig.model_validate(
    {"name": "dropin", "bind": "127.0.0.1:11435", "passthrough": "e1"}
)


def answered(
    status: int, body: bytes, content_type: str = "application/json", **metadata: object
) -> http.HTTPFlow:
    flow = routed_flow(status=status, body=body, **metadata)
    assert flow.response is not None
    flow.response.headers["content-type"] = content_type
    addon = EngineErrors()
    addon.responseheaders(flow)
    addon.response(flow)
    return flow


def error_of(flow: http.HTTPFlow) -> dict[str, object]:
    assert flow.response is not None
    assert flow.response.headers["content-type"] == "application/json"
    payload = json.loads(flow.response.content or b"")
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    return dict(payload["error"])


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (  # llama.cpp: an integer code
            500,
            b'{"error":{"code":500,"message":"failed to load model","type":"server_error"}}',
            "application/json",
            ("failed to load model", "server_error", None, "upstream_500"),
        ),
        (  # llama.cpp: its own type word is kept
            400,
            b'{"error":{"code":400,"message":"the request exceeds the context size",'
            b'"type":"exceed_context_size_error","n_prompt_tokens":9000}}',
            "application/json",
            (
                "the request exceeds the context size",
                "exceed_context_size_error",
                None,
                "upstream_400",
            ),
        ),
        (  # uvicorn's plain-text answer to a request it cannot parse
            400,
            b"Bad Request",
            "text/plain; charset=utf-8",
            ("Bad Request", "invalid_request_error", None, "upstream_400"),
        ),
        (  # FastAPI (vLLM)
            404,
            b'{"detail":"Not Found"}',
            "application/json",
            ("Not Found", "not_found_error", None, "upstream_404"),
        ),
        (  # vLLM's ErrorResponse
            400,
            b'{"object":"error","message":"max_tokens is too large","type":"BadRequestError",'
            b'"param":"max_tokens","code":400}',
            "application/json",
            ("max_tokens is too large", "BadRequestError", "max_tokens", "upstream_400"),
        ),
        (  # Ollama
            404,
            b'{"error":"model \\"x\\" not found, try pulling it first"}',
            "application/json",
            ('model "x" not found, try pulling it first', "not_found_error", None, "upstream_404"),
        ),
        (  # an OpenAI-compatible engine with a real code word
            400,
            b'{"error":{"message":"too long","type":"invalid_request_error","param":"messages",'
            b'"code":"context_length_exceeded"}}',
            "application/json",
            ("too long", "invalid_request_error", "messages", "context_length_exceeded"),
        ),
        (  # the error as the first event of a stream
            500,
            b'data: {"error":{"code":500,"message":"slot unavailable","type":"server_error"}}\n\n',
            "text/event-stream",
            ("slot unavailable", "server_error", None, "upstream_500"),
        ),
        (  # nothing at all
            503,
            b"",
            "text/plain",
            (
                "The engine answered 503 Service Unavailable.",
                "service_unavailable",
                None,
                "upstream_503",
            ),
        ),
    ],
)
def test_engine_errors_get_the_openai_shape_and_keep_status_and_message(
    status: int, body: bytes, content_type: str, expected: tuple[str, str, str | None, str]
) -> None:
    flow = answered(status, body, content_type)
    assert flow.response is not None and flow.response.status_code == status
    error = error_of(flow)
    assert (error["message"], error["type"], error["param"], error["code"]) == expected


def test_an_openai_shaped_error_is_left_as_it_was() -> None:
    body = (
        b'{"error": {"message": "m", "type": "timeout_error", "param": null,'
        b' "code": "engine_timeout"}}'
    )
    flow = answered(504, body)
    assert flow.response is not None
    assert json.loads(flow.response.content or b"") == json.loads(body)


def test_control_characters_in_the_engine_message_are_escaped_and_long_ones_cut() -> None:
    flow = answered(500, b"boom\x1b[2J" + b"x" * 5000, "text/plain")
    message = str(error_of(flow)["message"])
    assert message.startswith("boom\\x1b[2J") and len(message) <= 2001


def test_only_the_first_bytes_of_a_huge_error_body_are_read() -> None:
    flow = answered(500, b'{"error": "' + b"x" * (2 * MAX_ERROR_BODY) + b'"}')
    assert len(str(error_of(flow)["message"])) <= 2001


def test_a_compressed_error_body_is_decoded_when_small() -> None:
    flow = routed_flow(status=500, body=gzip.compress(b'{"error": "gz"}'))
    assert flow.response is not None
    flow.response.headers["content-encoding"] = "gzip"
    addon = EngineErrors()
    addon.responseheaders(flow)
    addon.response(flow)
    assert error_of(flow)["message"] == "gz"
    assert "content-encoding" not in flow.response.headers


def test_passthrough_listeners_keep_the_engine_shape() -> None:
    body = b'{"error":"model not found"}'
    flow = answered(404, body, flm__listener=DROPIN)
    assert flow.response is not None and flow.response.content == body


def test_success_and_gateway_answers_are_left_alone() -> None:
    ok = answered(200, b'{"ok": true}')
    assert ok.response is not None and ok.response.content == b'{"ok": true}'
    local = answered(404, b"plain", "text/plain", engine=None)
    assert local.response is not None and local.response.content == b"plain"
    assert not ENGINE_ERRORS_PENDING.is_set(local)


def test_an_error_replaced_by_a_success_is_left_alone() -> None:
    flow = routed_flow(status=503, body=b"down")
    addon = EngineErrors()
    addon.responseheaders(flow)
    flow.response = http.Response.make(200, b'{"ok": true}', {"content-type": "application/json"})
    addon.response(flow)
    assert flow.response.content == b'{"ok": true}'
