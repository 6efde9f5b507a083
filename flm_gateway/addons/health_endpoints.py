"""`GET /healthz` and `GET /readyz`, answered by the gateway on every listener.

Policy: `/healthz` is 200 while the process serves. `/readyz` is 200 when the
listeners are up and at least one engine is running-healthy (as the engine
directory's last check or failed connect says; a degraded engine, e.g. llama.cpp
still loading its model, does not count) and the state store answers (without it
every request is refused, fail closed), else 503; the body gives
counts only (no engine names or addresses: these endpoints need no key). Both
are exempt from authentication and never touch an engine. Any other method on
these paths is 405. Before the gateway committed its first config, `/readyz` is 503.
"""

from __future__ import annotations

from mitmproxy import http

from flm_gateway.core.errors import error_response, json_response
from flm_gateway.observability.health import readiness
from flm_gateway.proxy.api_kind import HEALTH_PATHS, ApiKind
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import API_KIND
from flm_gateway.proxy.runtime import Runtime


class Health:
    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    def prepare(self, runtime: Runtime) -> Runtime:
        return runtime

    def commit(self, prepared: Runtime) -> None:
        self._runtime = prepared

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.request.path not in HEALTH_PATHS:
            return
        API_KIND.set(flow, ApiKind.HEALTH)
        if flow.request.method not in ("GET", "HEAD"):
            flow.response = error_response(405, "Use GET.", code="method_not_allowed")
            return
        if flow.request.path == "/healthz":
            flow.response = json_response(200, {"status": "ok"})
            return
        if self._runtime is None:
            flow.response = json_response(503, {"status": "not-ready"})
            return
        ready, details = readiness(self._runtime)
        flow.response = json_response(200 if ready else 503, details)
