"""The live view of every configured engine: health, model lists, who may serve a model.

Policy:
- Each engine is health-checked every `health.interval` (faster, every
  `interval / 4` at least 1 s, while it is down so a returning engine is used
  again quickly) and its model list is refreshed every `health.models_refresh`
  and on a miss (a model nobody lists), at most once per `MISS_REFRESH_GAP`.
  Nothing here runs per request except the lookup.
- An engine that fails a connect probe or a forwarded request is marked down at
  once (passive check); the next health check can bring it back.
- `candidates` returns, for a model, the healthy engines first (rotated for
  round robin), then the unhealthy ones, so a caller can still try them last.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from flm_gateway.config.engines import EngineConfig
from flm_gateway.engines.base import (
    EngineAdapter,
    EngineUnavailable,
    HealthReport,
    HealthState,
    ModelInfo,
)
from flm_gateway.engines.registry import adapter_for

log = logging.getLogger("flm_gateway.engines")

MISS_REFRESH_GAP = 2.0
"""Seconds between model-list refreshes triggered by unknown models."""


@dataclass(frozen=True)
class EngineAddress:
    """Where an engine is: scheme, host, port and the path prefix of its base URL."""

    scheme: str
    host: str
    port: int
    base_path: str

    @classmethod
    def from_url(cls, url: str) -> EngineAddress:
        parts = urlsplit(url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(scheme, parts.hostname or "", port, parts.path.rstrip("/"))


SessionFactory = Callable[[EngineConfig], aiohttp.ClientSession]
Dial = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens a TCP connection to an engine through its egress."""
DialerFactory = Callable[[EngineConfig], Dial]
ConnectTimeout = Callable[[EngineConfig], float]
"""The connect timeout of an engine (its egress profile's, or its own timeouts.connect)."""


def direct_dialer(config: EngineConfig) -> Dial:
    """Dial engines directly (the `direct` egress)."""
    return asyncio.open_connection


class HttpEngineClient:
    """`EngineClient` over an aiohttp session (which carries the engine's egress)."""

    def __init__(self, config: EngineConfig, session: aiohttp.ClientSession) -> None:
        self._base = config.url
        self._timeout = aiohttp.ClientTimeout(total=config.health.timeout)
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._session = session

    async def get_json(self, path: str) -> Any:
        try:
            async with self._session.get(
                self._base + path, headers=self._headers, timeout=self._timeout
            ) as response:
                if response.status >= 400:
                    raise EngineUnavailable(f"GET {path} answered {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EngineUnavailable(f"GET {path} failed: {_describe(exc)}") from None

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request to the engine and read the whole response.

        Used where mitmproxy cannot forward (a fallback after a 5xx). Raises
        EngineUnavailable when the engine cannot be reached or times out.
        """
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
                auto_decompress=False,
            ) as response:
                content = await response.read()
                headers_out = [
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers
                ]
                return response.status, headers_out, content
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(_describe(exc)) from None

    async def get_status(self, path: str) -> int:
        try:
            async with self._session.get(
                self._base + path, headers=self._headers, timeout=self._timeout
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(f"GET {path} failed: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or exc.os_error})"
    return exc.__class__.__name__ + (f": {exc}" if str(exc) else "")


@dataclass
class EngineState:
    """One engine as the gateway sees it now."""

    config: EngineConfig
    adapter: EngineAdapter
    address: EngineAddress
    client: HttpEngineClient
    dial: Dial
    state: HealthState = HealthState.UNREACHABLE
    detail: str = "not checked yet"
    models: dict[str, ModelInfo] = field(default_factory=dict)
    checked_at: float = 0.0
    last_connect_ok: float = 0.0
    models_at: float = 0.0
    connect_timeout: float | None = None
    """Bound of a connect probe; None: `config.timeouts.connect`."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def healthy(self) -> bool:
        return self.state is not HealthState.UNREACHABLE

    def serves(self, model: str) -> bool:
        return model in self.models or model in self.config.models

    def mark_down(self, reason: str) -> None:
        if self.healthy:
            log.warning("engine %s marked down: %s", self.name, reason)
        self.state, self.detail = HealthState.UNREACHABLE, reason

    def mark_connect_ok(self) -> None:
        self.last_connect_ok = time.monotonic()


class EngineDirectory:
    """All configured engines and their live state; owns the background checks."""

    def __init__(
        self,
        engines: Sequence[EngineConfig],
        session_factory: SessionFactory,
        dialer_factory: DialerFactory = direct_dialer,
        connect_timeout: ConnectTimeout | None = None,
    ) -> None:
        self._sessions: list[aiohttp.ClientSession] = []
        self.engines: dict[str, EngineState] = {}
        for config in engines:
            session = session_factory(config)
            self._sessions.append(session)
            self.engines[config.name] = EngineState(
                config=config,
                adapter=adapter_for(config.kind),
                address=EngineAddress.from_url(config.url),
                client=HttpEngineClient(config, session),
                dial=dialer_factory(config),
                connect_timeout=connect_timeout(config) if connect_timeout else None,
            )
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_miss_refresh = 0.0
        self._miss_refresh: asyncio.Task[None] | None = None

    # --- lookups (hot path: no I/O) ---

    def get(self, name: str) -> EngineState:
        return self.engines[name]

    def ordered(self, names: Iterable[str], key: str) -> list[EngineState]:
        """Engines by name, healthy first in round-robin order, then unhealthy."""
        states = [self.engines[name] for name in names]
        healthy = [s for s in states if s.healthy]
        unhealthy = [s for s in states if not s.healthy]
        if len(healthy) > 1:
            counter = self._round_robin.setdefault(key, itertools.count())
            start = next(counter) % len(healthy)
            healthy = healthy[start:] + healthy[:start]
        return healthy + unhealthy

    def serving(self, model: str) -> list[str]:
        """Names of engines whose model list contains `model` (routing by discovery)."""
        return [name for name, state in self.engines.items() if state.serves(model)]

    def any_healthy(self) -> bool:
        return any(state.healthy for state in self.engines.values())

    def models(self) -> list[tuple[str, EngineState]]:
        """(model id, engine) for every model of every reachable engine, each model once."""
        seen: dict[str, EngineState] = {}
        for state in self.engines.values():
            if not state.healthy:
                continue
            for model_id in [*state.models, *state.config.models]:
                seen.setdefault(model_id, state)
        return list(seen.items())

    # --- background work ---

    async def check(self, state: EngineState) -> HealthReport:
        """Run one health check of `state` and record the result."""
        report = await state.adapter.check_health(state.client)
        was_healthy = state.healthy
        state.state, state.detail, state.checked_at = report.state, report.detail, time.monotonic()
        if report.models:
            state.models = {m.id: m for m in report.models}
            state.models_at = state.checked_at
        elif report.state is not HealthState.UNREACHABLE:
            await self._refresh_models(state)
        if state.healthy and not was_healthy:
            log.info("engine %s is up (%s)", state.name, report.state)
        elif was_healthy and not state.healthy:
            log.warning("engine %s is down: %s", state.name, report.detail)
        return report

    async def _refresh_models(self, state: EngineState) -> None:
        try:
            models = await state.adapter.list_models(state.client)
        except EngineUnavailable as exc:
            log.debug("engine %s: model list failed: %s", state.name, exc)
            return
        state.models = {m.id: m for m in models}
        state.models_at = time.monotonic()

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(state) for state in self.engines.values()))

    def refresh_on_miss(self) -> Awaitable[None] | None:
        """Start (at most every MISS_REFRESH_GAP s) a refresh of every model list; returns it."""
        now = time.monotonic()
        if self._miss_refresh is not None and not self._miss_refresh.done():
            return self._miss_refresh
        if now - self._last_miss_refresh < MISS_REFRESH_GAP:
            return None
        self._last_miss_refresh = now
        self._miss_refresh = asyncio.ensure_future(self.check_all())
        return self._miss_refresh

    async def _watch(self, state: EngineState) -> None:
        settings = state.config.health
        while True:
            try:
                if (
                    time.monotonic() - state.models_at >= settings.models_refresh
                    or time.monotonic() - state.checked_at >= settings.interval
                    or not state.healthy
                ):
                    await self.check(state)
            except Exception:  # a checker bug must not stop the other checks
                log.exception("health check of engine %s failed", state.name)
            delay = settings.interval if state.healthy else max(1.0, settings.interval / 4)
            await asyncio.sleep(delay)

    def start(self) -> None:
        """Start the periodic checks (call inside the running loop)."""
        self._tasks = [
            asyncio.create_task(self._watch(state), name=f"health:{name}")
            for name, state in self.engines.items()
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await asyncio.gather(*(session.close() for session in self._sessions))
