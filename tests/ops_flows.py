"""Flows for the operations unit tests: what the pipeline leaves in a flow's metadata."""

from __future__ import annotations

from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow, tutils

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.config.route_settings import RouteConfig
from flm_gateway.proxy.flow_meta import ROUTE_ENGINE, ROUTE_ROUTE

LISTENER = ListenerConfig.model_validate({"name": "main", "bind": "127.0.0.1:8088"})


def routed_flow(
    *,
    model: str = "m1",
    engine: str | None = "e1",
    status: int | None = 200,
    body: bytes = b'{"ok": true}',
    started: float = 1000.0,
    ended: float = 1000.5,
    route: str | None = None,
    **metadata: Any,
) -> http.HTTPFlow:
    """A chat flow routed to `engine`, answered with `status` (None: no response)."""
    request = tutils.treq(
        method=b"POST",
        path=b"/v1/chat/completions?api_key=secret",
        content=b'{"model": "m1"}',
        timestamp_start=started,
    )
    response = (
        tutils.tresp(
            status_code=status, content=body, timestamp_start=started + 0.1, timestamp_end=ended
        )
        if status is not None
        else False
    )
    flow = tflow.tflow(req=request, resp=response)
    flow.metadata.update(
        {
            "flm.listener": LISTENER,
            "flm.request_id": "req-1",
            "flm.client_ip": "192.0.2.7",
            "flm.api.kind": "chat",
            "flm.api.model": model,
        }
    )
    if engine is not None:
        ROUTE_ENGINE.set(flow, engine)
    if route is not None:
        ROUTE_ROUTE.set(flow, RouteConfig(model=route, engine=engine or "e1"))
    flow.metadata.update({key.replace("__", "."): value for key, value in metadata.items()})
    return flow
