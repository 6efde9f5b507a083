"""The admin listener: GET /metrics, /healthz and /readyz on a socket of its own.

An aiohttp server in the gateway's event loop, outside mitmproxy, so scrapes
never pass through the request pipeline (no policies, not counted as
requests, not in the request log). It binds only `admin.bind` (loopback unless
`allow_remote`); no API listener serves /metrics. Unknown paths are 404, other
methods 405, all answered with OpenAI-shaped JSON errors. `/readyz` answers
like the API listeners' (`addons.health.readiness`).

A reload that changes `admin.bind` binds the new address first and closes the
old one only when that worked, so a bad address leaves metrics where they were.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from flm_gateway.addons.health import readiness
from flm_gateway.config.admin import AdminConfig
from flm_gateway.config.types import format_host_port
from flm_gateway.errors import error_body
from flm_gateway.metrics import GatewayMetrics
from flm_gateway.runtime import Runtime

log = logging.getLogger("flm_gateway.admin")


class AdminBindError(Exception):
    """The admin listener could not bind its address."""


def _json(status: int, payload: dict[str, object]) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class AdminServer:
    """The admin HTTP server; `apply` (re)binds it to an `AdminConfig`."""

    def __init__(self, metrics: GatewayMetrics, runtime: Callable[[], Runtime | None]) -> None:
        self._metrics = metrics
        self._runtime = runtime
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/metrics", self._metrics_handler)
        app.router.add_route("*", "/healthz", self._healthz)
        app.router.add_route("*", "/readyz", self._readyz)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    @staticmethod
    def _method_ok(request: web.Request) -> web.Response | None:
        if request.method in ("GET", "HEAD"):
            return None
        return web.Response(
            status=405,
            body=error_body(405, "Use GET.", code="method_not_allowed"),
            content_type="application/json",
        )

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        refused = self._method_ok(request)
        if refused is not None:
            return refused
        return web.Response(
            body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._method_ok(request) or _json(200, {"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        refused = self._method_ok(request)
        if refused is not None:
            return refused
        runtime = self._runtime()
        if runtime is None:
            return _json(503, {"status": "not-ready", "listeners_up": False})
        ready, details = readiness(runtime)
        return _json(200 if ready else 503, details)

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(
            status=404,
            body=error_body(
                404, "The admin listener serves /metrics, /healthz and /readyz.", code="unknown_url"
            ),
            content_type="application/json",
        )

    async def _bind(self, address: tuple[str, int]) -> web.AppRunner:
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, address[0], address[1], reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise AdminBindError(
                f"admin listener cannot bind {format_host_port(address)}: {exc.strerror or exc}"
            ) from None
        return runner

    async def apply(self, config: AdminConfig) -> None:
        """Serve on `config.bind` (or stop when disabled). Raises AdminBindError."""
        wanted = config.bind if config.enabled else None
        if wanted == self.bound:
            return
        old_runner, old_bound = self._runner, self.bound
        new_runner: web.AppRunner | None = None
        if wanted is not None:
            try:
                new_runner = await self._bind(wanted)
            except AdminBindError:
                if old_runner is None or old_bound is None or old_bound[1] != wanted[1]:
                    raise
                # Same port, other host: the old socket must go first; put it back on failure.
                await old_runner.cleanup()
                self._runner, self.bound = None, None
                try:
                    new_runner = await self._bind(wanted)
                except AdminBindError:
                    self._runner, self.bound = await self._bind(old_bound), old_bound
                    raise
                old_runner = None
        self._runner, self.bound = new_runner, wanted
        if old_runner is not None:
            await old_runner.cleanup()
        if wanted is not None:
            log.info(
                "admin endpoints on http://%s (/metrics, /healthz, /readyz)",
                format_host_port(wanted),
            )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self.bound = None
