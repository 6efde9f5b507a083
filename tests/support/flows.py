"""Flows and runtimes for addon unit tests (mitmproxy's tflow, our config), no sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import tflow, tutils

from flm_gateway.config import LoadedConfig, parse_config
from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.egress.sessions import direct_session
from flm_gateway.engines.adapter import HealthState, ModelInfo
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.httpio.http_client import HttpSession
from flm_gateway.proxy.addon_contract import Addon, commit_all, prepare_all
from flm_gateway.proxy.mitm_listeners import spec_for
from flm_gateway.proxy.runtime import Runtime

BASE_CONFIG = """\
listeners:
  - {name: main, bind: "127.0.0.1:8088"}
  - {name: dropin, bind: "127.0.0.1:11435", passthrough: ollama}
engines:
  - {name: alpha, kind: vllm, url: "http://127.0.0.1:18001"}
  - {name: beta, kind: openai, url: "http://127.0.0.1:18002/base", api_key: sk-beta}
  - {name: ollama, kind: ollama, url: "http://127.0.0.1:11434"}
routes:
  - {model: "tiny-*", engine: alpha}
  - model: chat
    engine: beta
    upstream_model: small-7b
    fallback: [alpha]
    defaults: {temperature: 0.2}
    system_prompt: "You are terse."
"""


def _session(config: EngineConfig) -> HttpSession:
    return direct_session()


RuntimeFactory = Callable[..., Runtime]


def build_runtime(text: str = BASE_CONFIG, healthy: dict[str, list[str]] | None = None) -> Runtime:
    """A runtime for `text`; engines named in `healthy` are up and list those models.

    Must be called inside a running event loop (HTTP sessions need one); use the
    `make_runtime` fixture, which also closes it.
    """
    config, state_dir = parse_config(text, environ={})
    loaded = LoadedConfig(config=config, path=None, state_dir=state_dir, source=text)
    runtime = Runtime(loaded=loaded, directory=EngineDirectory(config.engines, _session))
    runtime.listening = True
    for name, models in (healthy or {}).items():
        state = runtime.directory.get(name)
        state.state = HealthState.HEALTHY
        state.models = {m: ModelInfo(m) for m in models}
    return runtime


def runtime_of(loaded: LoadedConfig) -> Runtime:
    """A runtime for `loaded` whose engines are never dialled (no event loop needed)."""
    return Runtime(loaded=loaded, directory=EngineDirectory(loaded.config.engines, _session))


def configure(config: LoadedConfig | Runtime, *addons: Addon[Any]) -> None:
    """Prepare, then commit, `addons` for `config` as the gateway does (raises ConfigError)."""
    runtime = config if isinstance(config, Runtime) else runtime_of(config)
    commit_all(prepare_all(addons, runtime))


def make_flow(
    method: str = "POST",
    path: str = "/v1/chat/completions",
    body: Any = None,
    *,
    port: int = 8088,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    bind_host: str = "127.0.0.1",
) -> http.HTTPFlow:
    """A client flow as it arrives on the listener bound to `bind_host`:`port` (no response
    yet), with the client's Host header (`127.0.0.1:port` unless `headers` says otherwise)."""
    flow = tflow.tflow()
    flow.response = None
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    flow.request = tutils.treq(method=method.encode(), path=path.encode(), content=content)
    flow.request.headers.clear()
    flow.request.headers["host"] = f"127.0.0.1:{port}"
    for key, value in (headers or {}).items():
        flow.request.headers[key] = value
    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}.get(bind_host)
    flow.client_conn.sockname = (local or bind_host, port)
    flow.client_conn.proxy_mode = ProxyMode.parse(spec_for((bind_host, port)))
    flow.client_conn.peername = ("127.0.0.1", 50000)
    return flow


def error_of(flow: http.HTTPFlow) -> tuple[int, dict[str, Any]]:
    """(status, error object) of a flow answered with an OpenAI-shaped error."""
    assert flow.response is not None
    return flow.response.status_code, json.loads(flow.response.content or b"{}")["error"]
