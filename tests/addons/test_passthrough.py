from __future__ import annotations

import pytest
from mitmproxy import http

from flm_gateway.addons.canonical_target import CanonicalTarget
from flm_gateway.addons.listener_context import ListenerContext
from flm_gateway.addons.passthrough import Passthrough
from flm_gateway.proxy.flow_meta import ROUTE_ENGINE, SECURITY_REJECTED
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.events import events_of
from tests.support.flows import RuntimeFactory, configure, error_of, make_flow

CONFIG = """\
listeners:
  - {name: main, bind: "127.0.0.1:8088"}
  - {name: ollama, bind: "127.0.0.1:11435", passthrough: ollama}
  - {name: vllm, bind: "127.0.0.1:8001", passthrough: vllm}
  - {name: llamacpp, bind: "127.0.0.1:8081", passthrough: llamacpp}
  - {name: lmstudio, bind: "127.0.0.1:1235", passthrough: lmstudio}
  - {name: openai, bind: "127.0.0.1:9001", passthrough: openai}
  - {name: open, bind: "127.0.0.1:11436", passthrough: ollama, allow_admin_endpoints: true}
engines:
  - {name: ollama, kind: ollama, url: "http://127.0.0.1:11434"}
  - {name: vllm, kind: vllm, url: "http://127.0.0.1:8000/base"}
  - {name: llamacpp, kind: llamacpp, url: "http://127.0.0.1:8080"}
  - {name: lmstudio, kind: lmstudio, url: "http://127.0.0.1:1234"}
  - {name: openai, kind: openai, url: "http://127.0.0.1:9000"}
"""


def _prepared(runtime: Runtime) -> tuple[ListenerContext, Passthrough]:
    context, passthrough = ListenerContext(), Passthrough()
    configure(runtime, context)
    configure(runtime, passthrough)
    return context, passthrough


def _arrive(context: ListenerContext, method: str, target: str, port: int) -> http.HTTPFlow:
    flow = make_flow(method, target, port=port)
    context.requestheaders(flow)
    CanonicalTarget().requestheaders(flow)
    return flow


@pytest.mark.parametrize(
    ("port", "method", "target"),
    [
        (11435, "POST", "/api/pull"),
        (11435, "POST", "/api/%70ull"),
        (11435, "POST", "//API/./Pull/"),
        (11435, "DELETE", "/x/../api/delete"),
        (11435, "POST", "/api/blobs/sha256:00"),
        (11435, "POST", "/api/signout"),
        (8001, "POST", "/%73leep?level=1"),
        (8001, "POST", "/v1/load_lora_adapter"),
        (8081, "POST", "/props"),
        (8081, "POST", "/slots/0?action=save"),
        (8081, "GET", "/slots"),
        (1235, "POST", "/api/v1/models/%6Coad"),
    ],
)
async def test_admin_routes_are_403_before_the_body(
    port: int, method: str, target: str, make_runtime: RuntimeFactory
) -> None:
    context, passthrough = _prepared(make_runtime(CONFIG))
    flow = _arrive(context, method, target, port)
    passthrough.requestheaders(flow)
    status, error = error_of(flow)
    assert (status, error["code"], error["type"]) == (
        403,
        "admin_endpoint_disabled",
        "permission_error",
    )
    assert SECURITY_REJECTED.require(flow) == "admin_endpoint"
    [event] = events_of(flow)
    assert event.type == "passthrough.admin_refused" and event.offence is None
    assert event.details["path"] == target.partition("?")[0]


@pytest.mark.parametrize(
    ("port", "method", "target"),
    [
        (11435, "POST", "/api/chat"),
        (11435, "GET", "/api/tags"),
        (8081, "GET", "/props"),
        (8081, "POST", "/completion"),
        (8001, "POST", "/v1/chat/completions"),
        (1235, "GET", "/api/v1/models"),
        (9001, "POST", "/api/pull"),
        (11436, "POST", "/api/pull"),
        (8088, "POST", "/api/pull"),
    ],
)
async def test_ordinary_routes_and_opened_listeners_pass(
    port: int, method: str, target: str, make_runtime: RuntimeFactory
) -> None:
    context, passthrough = _prepared(make_runtime(CONFIG))
    flow = _arrive(context, method, target, port)
    passthrough.requestheaders(flow)
    assert flow.response is None and not events_of(flow)


async def test_an_answered_flow_is_left_alone(make_runtime: RuntimeFactory) -> None:
    context, passthrough = _prepared(make_runtime(CONFIG))
    flow = _arrive(context, "POST", "/api/pull", 11435)
    flow.response = http.Response.make(401, b"no key")
    passthrough.requestheaders(flow)
    await passthrough.request(flow)
    assert flow.response.status_code == 401 and not events_of(flow)
    assert not ROUTE_ENGINE.is_set(flow)


async def test_the_canonical_target_is_forwarded_below_the_base_path(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(CONFIG)
    runtime.directory.get("vllm").mark_connect_ok()
    context, passthrough = _prepared(runtime)
    flow = _arrive(context, "POST", "//v1/%63hat/./completions?stream=%2F", 8001)
    passthrough.requestheaders(flow)
    await passthrough.request(flow)
    assert flow.response is None
    assert ROUTE_ENGINE.require(flow) == "vllm"
    assert (flow.request.host, flow.request.port) == ("127.0.0.1", 8000)
    assert flow.request.path == "/base/v1/chat/completions?stream=%2F"


async def test_a_reload_that_allows_admin_endpoints_opens_them(
    make_runtime: RuntimeFactory,
) -> None:
    context, passthrough = _prepared(make_runtime(CONFIG))
    flow = _arrive(context, "POST", "/api/pull", 11435)
    passthrough.requestheaders(flow)
    assert flow.response is not None
    opened = make_runtime(
        CONFIG.replace(
            "passthrough: ollama}", "passthrough: ollama, allow_admin_endpoints: true}", 1
        )
    )
    configure(opened, context)
    configure(opened, passthrough)
    again = _arrive(context, "POST", "/api/pull", 11435)
    passthrough.requestheaders(again)
    assert again.response is None
