"""Forward every path of a `passthrough` listener to its one engine, unchanged.

Policy: for drop-in fronting (an Ollama or llama.cpp client only changes its
URL). Runs on `request` for listeners with `passthrough: ENGINE`; the path and
body go to the engine as they came, the client's credentials are replaced by
the engine's. Ollama's admin endpoints (`/api/pull`, `/api/push`,
`/api/delete`, `/api/create`, `/api/copy`, and blob uploads under
`/api/blobs/`) are answered 403 unless the listener sets
`allow_admin_endpoints: true`. The path is matched after collapsing repeated
slashes and case, so `//api/pull` or `/API/Pull` cannot slip past. Engine
unreachable: 502 (504 on timeout) in OpenAI's error shape.
Writes `flm.api.kind` = `passthrough` and `flm.route.engine`.
"""

from __future__ import annotations

import re

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed
from flm_gateway.addons.routing import unreachable_response
from flm_gateway.config.engines import EngineKind
from flm_gateway.errors import error_response
from flm_gateway.runtime import Runtime
from flm_gateway.upstream import EGRESS_FAILURES_KEY, ProbeResult, point_at, probe

OLLAMA_ADMIN_PATHS = (
    "/api/pull",
    "/api/push",
    "/api/delete",
    "/api/create",
    "/api/copy",
    "/api/blobs",
)
_SLASHES = re.compile(r"/{2,}")


def is_ollama_admin(path: str) -> bool:
    """True when `path` (any spelling) addresses one of Ollama's admin endpoints."""
    normal = _SLASHES.sub("/", path.split("?", 1)[0]).lower().rstrip("/")
    return any(normal == p or normal.startswith(p + "/") for p in OLLAMA_ADMIN_PATHS)


class Passthrough:
    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    def apply_runtime(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @fail_closed()
    async def request(self, flow: http.HTTPFlow) -> None:
        listener = flow.metadata.get("flm.listener")
        if flow.response is not None or listener is None or listener.passthrough is None:
            return
        assert self._runtime is not None
        engine = self._runtime.directory.get(listener.passthrough)
        flow.metadata["flm.api.kind"] = "passthrough"
        if (
            engine.config.kind == EngineKind.OLLAMA
            and not listener.allow_admin_endpoints
            and is_ollama_admin(flow.request.path)
        ):
            flow.response = error_response(
                403,
                "This Ollama admin endpoint is disabled on this listener "
                "(allow_admin_endpoints: true enables it).",
                code="admin_endpoint_disabled",
            )
            return
        result = await probe(flow, engine)
        if result is not ProbeResult.OK:
            flow.response = unreachable_response(
                listener.passthrough,
                [(engine.name, result)],
                flow.metadata.get(EGRESS_FAILURES_KEY),
            )
            return
        point_at(flow, engine, flow.request.path)
