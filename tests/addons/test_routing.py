"""Routing: routes, discovery, fallbacks, probe failures, body and credential rewriting.

The dialer of each engine is replaced by a function that accepts or refuses, so no
socket is opened; real connects are covered by the integration tests.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from flm_gateway.addons.listener_context import ListenerContext
from flm_gateway.addons.model_routing import Routing
from flm_gateway.addons.openai_api import OpenAIApi
from flm_gateway.proxy.flow_meta import ROUTE_ENGINE
from flm_gateway.proxy.runtime import Runtime
from tests.support.flows import RuntimeFactory, configure, error_of, make_flow


class _Writer:
    def close(self) -> None:
        pass


def _dialer(outcome: str):  # type: ignore[no-untyped-def]
    async def dial(host: str, port: int):  # type: ignore[no-untyped-def]
        if outcome == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        if outcome == "timeout":
            await asyncio.sleep(10)
        return None, _Writer()

    return dial


def _set(runtime: Runtime, **outcomes: str) -> None:
    for name, outcome in outcomes.items():
        engine = runtime.directory.get(name)
        engine.dial = _dialer(outcome)
        engine.config = engine.config.model_copy(
            update={"timeouts": engine.config.timeouts.model_copy(update={"connect": 0.05})}
        )


async def _route(runtime: Runtime, body: dict[str, object], headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    context, api, routing = ListenerContext(), OpenAIApi(), Routing()
    for addon in (context, api, routing):
        configure(runtime, addon)
    flow = make_flow(body=body, headers=headers)
    context.requestheaders(flow)
    api.request(flow)
    await routing.request(flow)
    return flow


async def test_glob_route_goes_to_its_engine(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(healthy={"alpha": []})
    _set(runtime, alpha="ok")
    flow = await _route(runtime, {"model": "tiny-a", "messages": []})
    assert flow.response is None
    assert (flow.request.host, flow.request.port, flow.request.path) == (
        "127.0.0.1",
        18001,
        "/v1/chat/completions",
    )
    assert ROUTE_ENGINE.require(flow) == "alpha"
    assert flow.request.get_content() == json.dumps({"model": "tiny-a", "messages": []}).encode()


async def test_alias_route_rewrites_model_defaults_prompt_and_credentials(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(healthy={"beta": []})
    _set(runtime, beta="ok")
    flow = await _route(
        runtime,
        {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.9},
        headers={
            "authorization": "Bearer client-secret",
            "x-api-key": "client-secret",
            "cookie": "c=1",
        },
    )
    sent = json.loads(flow.request.get_content() or b"")
    assert sent["model"] == "small-7b"
    assert sent["temperature"] == 0.9  # the client's value wins over the profile default
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
    assert flow.request.path == "/base/v1/chat/completions"
    assert flow.request.headers["authorization"] == "Bearer sk-beta"
    assert "x-api-key" not in flow.request.headers and "cookie" not in flow.request.headers


async def test_profile_default_applies_when_omitted(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(healthy={"beta": []})
    _set(runtime, beta="ok")
    flow = await _route(runtime, {"model": "chat", "messages": []})
    assert json.loads(flow.request.get_content() or b"")["temperature"] == 0.2


async def test_down_engine_falls_back(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(healthy={"alpha": [], "beta": []})
    _set(runtime, beta="refused", alpha="ok")
    flow = await _route(runtime, {"model": "chat", "messages": []})
    assert ROUTE_ENGINE.require(flow) == "alpha"
    assert json.loads(flow.request.get_content() or b"")["model"] == "small-7b"
    assert not runtime.directory.get("beta").healthy  # marked down at once


async def test_all_refused_is_502_naming_engines_not_urls(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    _set(runtime, beta="refused", alpha="refused")
    flow = await _route(runtime, {"model": "chat", "messages": []})
    status, error = error_of(flow)
    assert (status, error["code"]) == (502, "engine_unavailable")
    assert "'beta'" in error["message"] and "'alpha'" in error["message"]
    assert "18002" not in error["message"] and "sk-beta" not in error["message"]


async def test_all_timed_out_is_504(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    _set(runtime, beta="timeout", alpha="timeout")
    flow = await _route(runtime, {"model": "chat", "messages": []})
    assert error_of(flow)[:1] == (504,) and error_of(flow)[1]["code"] == "engine_timeout"


async def test_discovery_routes_unrouted_models_round_robin(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(healthy={"alpha": ["shared"], "ollama": ["shared"]})
    _set(runtime, alpha="ok", ollama="ok")
    engines = [
        (await _route(runtime, {"model": "shared", "messages": []})).metadata["flm.route.engine"]
        for _ in range(4)
    ]
    assert sorted(engines) == ["alpha", "alpha", "ollama", "ollama"]
    assert engines[0] != engines[1]


async def test_unknown_model_is_404(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(healthy={"alpha": ["tiny-a"]})
    runtime.directory._last_miss_refresh = float("inf")  # no refresh: nothing is listening
    flow = await _route(runtime, {"model": "gpt-17", "messages": []})
    status, error = error_of(flow)
    assert (status, error["code"], error["type"]) == (404, "model_not_found", "not_found_error")


async def test_unhealthy_replica_is_tried_last(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(BASE_REPLICAS, healthy={"one": []})
    _set(runtime, one="ok", two="ok")
    for _ in range(3):
        flow = await _route(runtime, {"model": "m", "messages": []})
        assert ROUTE_ENGINE.require(flow) == "one"


BASE_REPLICAS = """\
listeners: [{name: main, bind: "127.0.0.1:8088"}]
engines:
  - {name: one, url: "http://127.0.0.1:1"}
  - {name: two, url: "http://127.0.0.1:2"}
routes: [{model: m, engine: [one, two]}]
"""


@pytest.mark.parametrize("kind_path", ["/v1/embeddings", "/v1/completions"])
async def test_other_endpoints_keep_their_path(
    make_runtime: RuntimeFactory, kind_path: str
) -> None:
    runtime = make_runtime(healthy={"alpha": []})
    _set(runtime, alpha="ok")
    context, api, routing = ListenerContext(), OpenAIApi(), Routing()
    for addon in (context, api, routing):
        configure(runtime, addon)
    flow = make_flow(path=kind_path, body={"model": "tiny-a", "input": "x"})
    context.requestheaders(flow)
    api.request(flow)
    await routing.request(flow)
    assert flow.request.path == kind_path


async def test_failed_mitmproxy_connect_marks_the_engine_down(make_runtime: RuntimeFactory) -> None:
    from mitmproxy.proxy import server_hooks
    from mitmproxy.test import tflow

    runtime = make_runtime(healthy={"alpha": ["tiny-a"], "beta": ["small-7b"]})
    routing = Routing()
    configure(runtime, routing)
    server = tflow.tserver_conn()
    server.address = ("127.0.0.1", 18001)
    server.error = "Connection refused"
    routing.server_connect_error(
        server_hooks.ServerConnectionHookData(server=server, client=tflow.tclient_conn())
    )
    assert not runtime.directory.get("alpha").reachable
    assert runtime.directory.get("beta").reachable
