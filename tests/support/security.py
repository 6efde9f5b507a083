"""Helpers for the security addon tests: configs, an opened state service, flows as the
listener_context and client_ip addons would leave them, and hooks run in pipeline order."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mitmproxy import http

from flm_gateway.config import LoadedConfig, parse_config
from flm_gateway.proxy.flow_meta import CLIENT_IP, LISTENER, REQUEST_ID
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.state.state_service import StateService
from tests.support.flows import configure, make_flow

BASE = """\
listeners:
  - {name: main, bind: "127.0.0.1:8088", auth: api-key}
  - {name: open, bind: "127.0.0.1:8089", auth: none}
engines:
  - {name: alpha, kind: vllm, url: "http://127.0.0.1:18001"}
routes:
  - {model: "tiny-*", engine: alpha}
  - {model: chat, engine: alpha}
"""


def loaded(security: str = "", tmp_path: Path | None = None, base: str = BASE) -> LoadedConfig:
    """A validated config: `base` plus a `security:` section (YAML text, indented by us)."""
    text = base
    if tmp_path is not None:
        text = f"server: {{state_dir: {str(tmp_path / 'state')!r}}}\n" + text
    if security.strip():
        text += "security:\n" + "".join(f"  {line}\n" for line in security.strip("\n").splitlines())
    config, state_dir = parse_config(text, environ={}, base_dir=tmp_path)
    return LoadedConfig(config=config, path=None, state_dir=state_dir, source=text)


@contextmanager
def opened_service(config: LoadedConfig) -> Iterator[StateService]:
    service = StateService()
    service.open(config)
    try:
        yield service
    finally:
        service.close()


def flow(
    config: LoadedConfig,
    method: str = "GET",
    path: str = "/v1/models",
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    port: int = 8088,
    ip: str = "127.0.0.1",
) -> http.HTTPFlow:
    """A flow on the listener bound to `port`, from `ip`, tagged like listener_context does."""
    result = make_flow(method, path, body, port=port, headers=headers)
    result.client_conn.peername = (ip, 50000)
    listener = next((x for x in config.config.listeners if x.bind[1] == port), None)
    LISTENER.set(result, listener)
    REQUEST_ID.set(result, "req-1")
    CLIENT_IP.set(result, ip)
    return result


async def run_hooks(
    addons: Sequence[Any],
    target: http.HTTPFlow,
    hooks: Sequence[str] = ("requestheaders", "request"),
) -> None:
    """Call `hooks` on `addons` in order, as mitmproxy does (each hook across all addons)."""
    for hook in hooks:
        for addon in addons:
            method = getattr(addon, hook, None)
            if method is None:
                continue
            result = method(target)
            if inspect.isawaitable(result):
                await result


def apply(config: LoadedConfig, *addons: Any, runtime: Runtime | None = None) -> None:
    """Prepare and commit `addons` for `runtime` (one built from `config` when None)."""
    configure(runtime if runtime is not None else config, *addons)
