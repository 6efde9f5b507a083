"""The admin listener: GET /metrics, /healthz and /readyz on a socket of its own.

A small HTTP server (`httpio.server`) in the gateway's event loop, outside
mitmproxy, so scrapes never pass through the request pipeline (no policies, not
counted as requests, not in the request log). It binds only `admin.bind`
(loopback unless `allow_remote`); no API listener serves /metrics. A request
whose Host does not name it (`localhost`, its address, any IP on a wildcard
bind, `admin.hosts`) is 421, as on the API listeners. Unknown paths
are 404, other methods than GET and HEAD 405, all answered with OpenAI-shaped
JSON errors (as are the server's own 400, 413, 431 and 500). `/readyz` answers
like the API listeners' (`addons.health.readiness`).

A reload that changes `admin.bind` binds the new address first and closes the
old one only when that worked, so a bad address leaves metrics where they were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flm_gateway.config.admin_settings import AdminConfig
from flm_gateway.config.binds import listen_host
from flm_gateway.config.types import format_host_port
from flm_gateway.core.hostnames import parse_authority
from flm_gateway.httpio.server import HttpServer, Request, Response
from flm_gateway.observability.exposition import CONTENT_TYPE
from flm_gateway.observability.health import readiness
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.proxy.port_owner import bind_failure
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.host_policy import HostPolicy

log = logging.getLogger("flm_gateway.admin")

_NO_STORE = (("Cache-Control", "no-store"),)


class AdminBindError(Exception):
    """The admin listener could not bind its address."""


class AdminServer:
    """The admin HTTP server; `apply` (re)binds it to an `AdminConfig`."""

    def __init__(self, metrics: GatewayMetrics, runtime: Callable[[], Runtime | None]) -> None:
        self._metrics = metrics
        self._runtime = runtime
        self._server: HttpServer | None = None
        self.bound: tuple[str, int] | None = None
        self._hosts = HostPolicy.for_bind(("127.0.0.1", 0), ())
        self._routes: dict[str, Callable[[], Response]] = {
            "/metrics": self._metrics_page,
            "/healthz": lambda: Response.json(200, {"status": "ok"}, _NO_STORE),
            "/readyz": self._readyz,
        }

    async def _handle(self, request: Request) -> Response:
        hosts = [value for name, value in request.headers if name == "host"]
        named = parse_authority(hosts[0]) if len(hosts) == 1 else None
        if named is None or not self._hosts.accepts(named):
            # As on the API listeners: a page on a rebound name must not read the metrics.
            return Response.error(
                421, "This listener does not serve that host.", code="misdirected_request"
            )
        route = self._routes.get(request.path)
        if route is None:
            return Response.error(
                404, "The admin listener serves /metrics, /healthz and /readyz.", code="unknown_url"
            )
        if request.method not in ("GET", "HEAD"):
            return Response.error(405, "Use GET.", code="method_not_allowed")
        return route()

    def _metrics_page(self) -> Response:
        return Response(200, self._metrics.exposition(), (("Content-Type", CONTENT_TYPE),))

    def _readyz(self) -> Response:
        runtime = self._runtime()
        if runtime is None:
            return Response.json(503, {"status": "not-ready", "listeners_up": False}, _NO_STORE)
        ready, details = readiness(runtime)
        return Response.json(200 if ready else 503, details, _NO_STORE)

    async def _bind(self, address: tuple[str, int]) -> HttpServer:
        server = HttpServer(self._handle)
        try:
            await server.start(listen_host(address[0]), address[1])
        except OSError as exc:
            await server.close()
            raise AdminBindError(
                f"admin listener: {bind_failure(address[0], address[1], exc)}"
            ) from None
        return server

    async def apply(self, config: AdminConfig) -> None:
        """Serve on `config.bind` (or stop when disabled). Raises AdminBindError."""
        wanted = config.bind if config.enabled else None
        hosts = HostPolicy.for_bind(config.bind, config.hosts)
        if wanted == self.bound:
            self._hosts = hosts
            return
        old_server, old_bound = self._server, self.bound
        new_server: HttpServer | None = None
        if wanted is not None:
            try:
                new_server = await self._bind(wanted)
            except AdminBindError:
                if old_server is None or old_bound is None or old_bound[1] != wanted[1]:
                    raise
                # Same port, other host: the old socket must go first; put it back on failure.
                await old_server.close()
                self._server, self.bound = None, None
                try:
                    new_server = await self._bind(wanted)
                except AdminBindError:
                    self._server, self.bound = await self._bind(old_bound), old_bound
                    raise
                old_server = None
        self._server, self.bound, self._hosts = new_server, wanted, hosts
        if old_server is not None:
            await old_server.close()
        if wanted is not None:
            log.info(
                "admin endpoints on http://%s (/metrics, /healthz, /readyz)",
                format_host_port(wanted),
            )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
        self._server = None
        self.bound = None
