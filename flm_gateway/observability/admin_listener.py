"""The admin listener: GET /metrics, /healthz and /readyz on a socket of its own.

A small HTTP server (`httpio.server`) in the gateway's event loop, outside
mitmproxy, so scrapes never pass through the request pipeline (no policies, not
counted as requests, not in the request log). It binds only `admin.bind`
(loopback unless `allow_remote`); no API listener serves /metrics. A request
whose Host does not name it (`localhost`, its address, any IP on a wildcard
bind, `admin.hosts`) is 421, as on the API listeners. Unknown paths
are 404, other methods than GET and HEAD 405, all answered with OpenAI-shaped
JSON errors (as are the server's own 400, 413, 431 and 500). `/readyz` answers
like the API listeners' (`addons.health.readiness`). What the three pages say
comes from an `AdminPages`: one gateway's (`GatewayPages`), or with
`server.workers` the supervisor's, which sums its workers (`app.worker_pages`).

A reload that changes `admin.bind` binds the new address first and closes the
old one only when that worked, so a bad address leaves metrics where they were.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

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


Status = tuple[bool, dict[str, Any]]
"""(good, the JSON body): 200 when good, else 503."""


class AdminPages(Protocol):
    """What the admin endpoints serve."""

    async def metrics(self) -> bytes:
        """The Prometheus text exposition."""
        ...

    async def health(self) -> Status: ...

    async def readiness(self) -> Status: ...


class GatewayPages:
    """The pages of one gateway process: its metrics, its runtime's readiness."""

    def __init__(self, metrics: GatewayMetrics, runtime: Callable[[], Runtime | None]) -> None:
        self._metrics = metrics
        self._runtime = runtime

    async def metrics(self) -> bytes:
        return self._metrics.exposition()

    async def health(self) -> Status:
        return True, {"status": "ok"}

    async def readiness(self) -> Status:
        runtime = self._runtime()
        if runtime is None:
            return False, {"status": "not-ready", "listeners_up": False}
        return readiness(runtime)


class AdminServer:
    """The admin HTTP server; `apply` (re)binds it to an `AdminConfig`."""

    def __init__(self, pages: AdminPages) -> None:
        self._pages = pages
        self._server: HttpServer | None = None
        self.bound: tuple[str, int] | None = None
        self._hosts = HostPolicy.for_bind(("127.0.0.1", 0), ())
        self._routes: dict[str, Callable[[], Awaitable[Response]]] = {
            "/metrics": self._metrics_page,
            "/healthz": lambda: self._status_page(pages.health),
            "/readyz": lambda: self._status_page(pages.readiness),
        }

    @property
    def port(self) -> int | None:
        """The port actually bound (differs from `bound` for port 0)."""
        address = self._server.address if self._server is not None else None
        return address[1] if address is not None else None

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
        return await route()

    async def _metrics_page(self) -> Response:
        return Response(200, await self._pages.metrics(), (("Content-Type", CONTENT_TYPE),))

    async def _status_page(self, status: Callable[[], Awaitable[Status]]) -> Response:
        good, details = await status()
        return Response.json(200 if good else 503, details, _NO_STORE)

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
        if new_server is not None:
            log.info(
                "admin endpoints on http://%s (/metrics, /healthz, /readyz)",
                format_host_port(new_server.address or wanted or ("", 0)),
            )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
        self._server = None
        self.bound = None
