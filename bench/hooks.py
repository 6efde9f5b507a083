"""`python -m bench.hooks`: the CPU our addons' own hooks cost per request, in process.

Runs the real pipeline (built as the gateway builds it, behind `AddonChain`) on
prepared mitmproxy flows shaped like the benchmark's chat completion: requestheaders,
request, responseheaders, response, as mitmproxy would call them, but without mitmproxy's
dispatch, its HTTP layers or sockets. The engine counts as reachable (a connect
succeeded just now), so no probe dials. Prints the CPU time of this thread per
request (`time.thread_time`: time other processes on a shared box take is not
counted), best of `--repeat`; the figure is what `bench.profile` calls "our addons",
measured exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from flm_gateway.addons.inflight import Inflight
from flm_gateway.app.pipeline import build_addons
from flm_gateway.config import LoadedConfig, parse_config
from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.egress.sessions import direct_session
from flm_gateway.engines.adapter import HealthState, ModelInfo
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.httpio.http_client import HttpSession
from flm_gateway.proxy.addon_chain import AddonChain
from flm_gateway.proxy.addon_contract import commit_all, prepare_all
from flm_gateway.proxy.mitm_listeners import PLACEHOLDER_TARGET, spec_for
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.state.state_service import StateService

CONFIG = """\
listeners:
  - {name: main, bind: "127.0.0.1:8088"}
engines:
  - {name: engine, kind: vllm, url: "http://127.0.0.1:18001"}
routes:
  - {model: bench-model, engine: engine}
"""
BODY = json.dumps(
    {
        "model": "bench-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello in one word."},
        ],
        "max_tokens": 64,
    }
).encode()


def _session(config: EngineConfig) -> HttpSession:
    return direct_session()


def runtime() -> Runtime:
    text = CONFIG + f"server: {{state_dir: {tempfile.mkdtemp(prefix='flm-bench-')}}}\n"
    config, state_dir = parse_config(text, environ={})
    loaded = LoadedConfig(config=config, path=None, state_dir=state_dir, source=text)
    built = Runtime(loaded=loaded, directory=EngineDirectory(config.engines, _session))
    built.listening = True
    engine = built.directory.get("engine")
    engine.state = HealthState.HEALTHY
    engine.models = {"bench-model": ModelInfo("bench-model")}
    return built


def flow() -> http.HTTPFlow:
    made = tflow.tflow()
    made.response = None
    made.request = tutils.treq(method=b"POST", path=b"/v1/chat/completions", content=BODY)
    # As mitmproxy's reverse mode hands it to the hooks: aimed at the listener's
    # placeholder target (see flm_gateway.proxy.mitm_listeners), the client's own Host kept
    # (`keep_host_header`), tagged with the mode of the listener that accepted it.
    made.request.data.host, made.request.data.port = PLACEHOLDER_TARGET
    made.request.headers.clear()
    made.request.headers["host"] = "127.0.0.1:8088"
    made.request.headers["content-type"] = "application/json"
    made.request.headers["content-length"] = str(len(BODY))
    made.client_conn.sockname = ("127.0.0.1", 8088)
    made.client_conn.proxy_mode = ProxyMode.parse(spec_for(("127.0.0.1", 8088)))
    made.client_conn.peername = ("127.0.0.1", 50000)
    return made


def response() -> http.Response:
    return http.Response.make(200, b'{"id": "x"}', {"content-type": "application/json"})


async def settle(result: object) -> None:
    """Await a hook's result when the chain made that hook async."""
    if inspect.isawaitable(result):
        await result


async def per_request_us(chain: Any, built: Runtime, requests: int) -> float:
    flows = [flow() for _ in range(requests)]
    responses = [response() for _ in range(requests)]
    engine = built.directory.get("engine")
    start = time.thread_time()
    for one, answer in zip(flows, responses, strict=True):
        engine.last_connect_ok = time.monotonic()
        for hook in (chain.requestheaders, chain.request):
            await settle(hook(one))
        one.response = answer
        for hook in (chain.responseheaders, chain.response):
            await settle(hook(one))
    elapsed = time.thread_time() - start
    if flows[0].metadata.get("flm.route.engine") != "engine":
        raise RuntimeError(f"the flow was not routed: {flows[0].metadata}")
    return elapsed / requests * 1e6


async def measure(requests: int, repeat: int) -> float:
    built = runtime()
    state = StateService()
    addons = build_addons(Inflight(), state=state)
    prepared = prepare_all(addons, built)
    state.open(built.loaded)  # as the gateway does, between prepare and commit
    commit_all(prepared)
    chain = AddonChain(addons)
    try:
        best = float("inf")
        for _ in range(repeat):
            # The gateway's refresh loop keeps the state view fresh; without it the view
            # goes stale after `state.stale_after` and the security addons answer 503.
            await state.refresh(force=True)
            best = min(best, await per_request_us(chain, built, requests))
        return best
    finally:
        await built.directory.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hooks", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    best = asyncio.run(measure(args.requests, args.repeat))
    print(f"our addons' hooks: {best:.1f} µs per request (best of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
