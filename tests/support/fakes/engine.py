"""`FakeEngine`: one fake LLM engine on 127.0.0.1, its lifecycle and its observation.

Every request (except the `/_fake/*` control paths) goes through one middleware that,
in this order: records it, waits `headers_delay`, drops the connection for
`close_after=0`, answers 503 while loading (every path) or degraded (the kind's health
paths), checks the upstream API key if one is set (health paths stay public, as on
vLLM and llama.cpp), answers an injected `status`, and maps unknown paths to the
kind's own 404 (LM Studio: 200). TCP connections are counted as they are accepted.

Control paths, for a fake running in another process:
GET /_fake/requests, DELETE /_fake/requests, GET /_fake/stats,
POST /_fake/fault (a JSON object of `Fault` fields; `{}` clears),
POST /_fake/health ({"health": "ok" | "degraded" | "loading"}).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, fields
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict

from tests.support.fakes.generate import BODY_KEY, FAULT_KEY, RECORD_KEY, close_connection
from tests.support.fakes.llamacpp import LlamaCppKind
from tests.support.fakes.lmstudio import LMStudioKind
from tests.support.fakes.ollama import OllamaKind
from tests.support.fakes.openai_like import OpenAIKind
from tests.support.fakes.state import HEALTH_STATES, EngineState, Fault, Health, RecordedRequest
from tests.support.fakes.vllm import VLLMKind

KINDS: dict[str, type[OpenAIKind]] = {
    kind.name: kind for kind in (OpenAIKind, OllamaKind, VLLMKind, LMStudioKind, LlamaCppKind)
}
CONTROL_PREFIX = "/_fake/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeEngine:
    """A fake engine of one kind; `async with` starts it and stops it."""

    def __init__(
        self,
        kind: str = "openai",
        models: Sequence[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        chunks: int = 8,
        chunk_delay: float = 0.0,
        slots: int = 4,
        api_key: str | None = None,
        loading_seconds: float = 0.0,
        max_records: int = 100_000,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {sorted(KINDS)}")
        kind_class = KINDS[kind]
        self.state = EngineState(
            kind=kind,
            models=list(models if models is not None else kind_class.default_models),
            chunks=chunks,
            chunk_delay=chunk_delay,
            slots=slots,
            api_key=api_key,
            max_records=max_records,
        )
        self.kind = kind_class(self.state)
        self.host = host
        self.port = port
        self.loading_seconds = loading_seconds
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    # ---- observation ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def models(self) -> list[str]:
        """The served models; tests may edit this list while the engine runs."""
        return self.state.models

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received, oldest first."""
        return list(self.state.requests)

    @property
    def admin_calls(self) -> list[RecordedRequest]:
        """The requests that reached the kind's admin endpoints (Ollama pull, delete...)."""
        return [r for r in self.state.requests if self.kind.is_admin(r.path)]

    @property
    def connections(self) -> int:
        """TCP connections accepted since the engine was created."""
        return self.state.connections

    @property
    def in_flight(self) -> int:
        return self.state.in_flight

    def clear_requests(self) -> None:
        self.state.requests.clear()

    # ---- control ----------------------------------------------------------------

    def set_fault(self, fault: Fault | None = None, /, **changes: Any) -> None:
        """Replace the instance fault: `set_fault(status=503)`, `set_fault(None)` clears."""
        self.state.fault = fault if fault is not None else Fault(**changes)

    def set_health(self, health: Health) -> None:
        if health not in HEALTH_STATES:
            raise ValueError(f"health must be one of {HEALTH_STATES}, not {health!r}")
        self.state.health = health
        if health == "ok":
            self.state.loading_until = 0.0

    async def start(self) -> None:
        """Listen on the engine's port (the same one again after a stop)."""
        if self._server is not None:
            return
        self._runner = web.AppRunner(
            self._app(), access_log=None, handle_signals=False, shutdown_timeout=0.05
        )
        await self._runner.setup()
        make_handler = self._runner.server
        if make_handler is None:
            raise RuntimeError("aiohttp runner has no server after setup()")

        def accept() -> asyncio.BaseProtocol:
            self.state.connections += 1
            return make_handler()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            accept, self.host, self.port, reuse_address=True, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.loading_seconds > 0:
            self.state.loading_until = time.monotonic() + self.loading_seconds

    async def stop(self) -> None:
        """Stop listening and drop every connection, in-flight requests included."""
        server, runner = self._server, self._runner
        self._server = self._runner = None
        if server is not None:
            server.close()
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---- the application ----------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        app.add_routes(self.kind.routes())
        app.add_routes(
            [
                web.get(CONTROL_PREFIX + "requests", self._control_requests),
                web.delete(CONTROL_PREFIX + "requests", self._control_clear),
                web.get(CONTROL_PREFIX + "stats", self._control_stats),
                web.post(CONTROL_PREFIX + "fault", self._control_fault),
                web.post(CONTROL_PREFIX + "health", self._control_health),
            ]
        )
        app.on_response_prepare.append(self._add_headers)
        return app

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(self.kind.response_headers)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        state, kind = self.state, self.kind
        body = await self._record(request)
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            try:
                fault = state.fault_for(request.path, request.headers, body)
            except (TypeError, ValueError) as error:
                return kind.fault_response(request, 400, f"bad x-fake-* value: {error}")
            request[FAULT_KEY] = fault
            if fault.headers_delay > 0:
                await asyncio.sleep(fault.headers_delay)
            if fault.close_after == 0:
                close_connection(request)
                return web.Response(status=499)
            if state.loading:
                return kind.loading()
            if state.health == "degraded" and request.path in kind.health_paths:
                return kind.unhealthy()
            if (
                state.api_key
                and kind.requires_key(request.path)
                and (request.headers.get("Authorization") != f"Bearer {state.api_key}")
            ):
                return kind.unauthorized()
            if fault.status is not None:
                return kind.fault_response(request, fault.status, f"injected fault {fault.status}")
            try:
                return await handler(request)
            except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
                return kind.unknown_path(request)
        finally:
            state.in_flight -= 1

    async def _record(self, request: web.Request) -> Any:
        """Record the request; read and parse its body unless it is a multipart upload."""
        body: Any = None
        size = 0
        if request.can_read_body and not request.content_type.startswith("multipart/"):
            raw = await request.read()
            size = len(raw)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        request[BODY_KEY] = body
        record = RecordedRequest(
            request.method,
            request.path,
            CIMultiDict(request.headers),
            body,
            dict(request.query),
            size,
        )
        request[RECORD_KEY] = record
        self.state.requests.append(record)
        return body

    # ---- control handlers ---------------------------------------------------------

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.to_dict() for r in self.state.requests])

    async def _control_clear(self, request: web.Request) -> web.Response:
        self.clear_requests()
        return web.json_response({"cleared": True})

    async def _control_stats(self, request: web.Request) -> web.Response:
        state = self.state
        return web.json_response(
            {
                "kind": state.kind,
                "models": state.models,
                "health": state.health,
                "connections": state.connections,
                "in_flight": state.in_flight,
                "max_in_flight": state.max_in_flight,
                "requests": len(state.requests),
                "admin_calls": len(self.admin_calls),
                "fault": asdict(state.fault),
            }
        )

    async def _control_fault(self, request: web.Request) -> web.Response:
        raw = await request.json() if request.can_read_body else {}
        known = {f.name for f in fields(Fault)}
        if not isinstance(raw, dict) or set(raw) - known:
            return web.json_response({"error": f"fault fields are {sorted(known)}"}, status=400)
        if "paths" in raw:
            raw["paths"] = tuple(raw["paths"])
        self.set_fault(Fault(**raw))
        return web.json_response(asdict(self.state.fault))

    async def _control_health(self, request: web.Request) -> web.Response:
        raw = await request.json()
        health = raw.get("health") if isinstance(raw, dict) else None
        if health not in HEALTH_STATES:
            return web.json_response({"error": f"health is one of {HEALTH_STATES}"}, status=400)
        self.set_health(health)
        return web.json_response({"health": health})
