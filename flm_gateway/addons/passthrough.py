"""Forward every path of a `passthrough` listener to its one engine, admin routes excepted.

Policy: for drop-in fronting (an Ollama or llama.cpp client only changes its
URL). On listeners with `passthrough: ENGINE`:
- `requestheaders`: the engine's admin and management routes (its adapter's
  `admin_routes`, taken from the engine's own route table, per listener in
  `engines.registry.refused_admin_routes`; see `docs/engines.md`)
  are answered 403 `admin_endpoint_disabled` unless the listener sets
  `allow_admin_endpoints: true`, before the body is read. The path matched is the
  canonical one `canonical_target` already put on the flow (decoded as the engine
  decodes it, dot segments resolved), ignoring case and a trailing slash; the
  method counts where the engine's does (GET `/props` of llama.cpp is open, POST is
  not). Records `passthrough.admin_refused` (no offence).
- `request`: probe the engine, then forward the canonical path, query and body as
  they are; the client's credentials are replaced by the engine's. Engine
  unreachable: 502 (504 on timeout) in OpenAI's error shape.
Fails closed. Writes `flm.api.kind` = `passthrough`, `flm.route.engine`, and
`flm.security.rejected` = `admin_endpoint` on a refusal; reads `flm.listener` and
`flm.target.original`.
"""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

from flm_gateway.core.errors import error_response
from flm_gateway.core.severity import Severity
from flm_gateway.engines.admin_routes import AdminRoutes
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.engines.registry import refused_admin_routes
from flm_gateway.proxy.addon_contract import NotConfigured
from flm_gateway.proxy.api_kind import ApiKind
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    API_KIND,
    EGRESS_FAILURES,
    LISTENER,
    SECURITY_REJECTED,
    TARGET_ORIGINAL,
)
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.routing.candidates import unreachable_response
from flm_gateway.routing.upstream import ProbeResult, point_at, probe
from flm_gateway.security.events import record


class Passthrough:
    def __init__(self) -> None:
        self._directory: EngineDirectory | None = None
        self._locked: Mapping[str, AdminRoutes] = {}

    def prepare(self, runtime: Runtime) -> tuple[Mapping[str, AdminRoutes], EngineDirectory]:
        return refused_admin_routes(runtime.loaded.config), runtime.directory

    def commit(self, prepared: tuple[Mapping[str, AdminRoutes], EngineDirectory]) -> None:
        self._locked, self._directory = prepared

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        listener = LISTENER.get(flow)
        if flow.response is not None or listener is None or listener.passthrough is None:
            return
        admin = self._locked.get(listener.name)
        if admin is None:
            return
        request = flow.request
        route = admin.match(request.method, request.path.partition("?")[0])
        if route is None:
            return
        API_KIND.set(flow, ApiKind.PASSTHROUGH)
        SECURITY_REJECTED.set(flow, "admin_endpoint")
        record(
            flow,
            "passthrough.admin_refused",
            Severity.MEDIUM,
            route=route.path,
            method=request.method,
            path=TARGET_ORIGINAL.get(flow, request.path).partition("?")[0][:200],
        )
        flow.response = error_response(
            403,
            f"This endpoint manages the engine ({route.what}) and is disabled on this "
            "listener (allow_admin_endpoints: true enables it).",
            code="admin_endpoint_disabled",
        )

    @fail_closed()
    async def request(self, flow: http.HTTPFlow) -> None:
        listener = LISTENER.get(flow)
        if flow.response is not None or listener is None or listener.passthrough is None:
            return
        if self._directory is None:
            raise NotConfigured(self)
        engine = self._directory.get(listener.passthrough)
        API_KIND.set(flow, ApiKind.PASSTHROUGH)
        result = await probe(flow, engine)
        if result is not ProbeResult.OK:
            flow.response = unreachable_response(
                listener.passthrough,
                [(engine.name, result)],
                EGRESS_FAILURES.get(flow),
            )
            return
        point_at(flow, engine, flow.request.path)
