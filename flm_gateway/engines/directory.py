"""The live view of every configured engine: health, model lists, who may serve a model.

Policy:
- Each engine is checked with its adapter's own health signal
  (`flm_gateway.engines.engine_check`: running-healthy, running-degraded or unreachable)
  every `health.interval`, each request waiting at most `health.timeout`; while
  it is not healthy, every `interval / 4` (at least `DOWN_CHECK_FLOOR`), so a
  returning engine is used again quickly, without a restart.
- Its model list is refreshed every `health.models_refresh`, when it comes back,
  and on a miss (a model nobody lists; at most once per `MISS_REFRESH_GAP`).
  Nothing here runs per request except the lookups.
- An engine that refuses a connect probe is marked unreachable at once (passive
  check). A request that would want an unhealthy engine (`nudge`), or a later
  successful connect to it, wakes its checker early (at most every `NUDGE_GAP`),
  so a returning engine is back in the rotation within moments.
- Passive health: requests report their outcome (`record_failure`,
  `record_success`). `health.max_fails` failures in a row (connect, disconnected,
  5xx, timeout) make an engine rest for `health.fail_timeout`: routing tries it only
  after every other candidate. Then its checker runs at once; that check is the
  half-open probe, and the engine is back in its place once it passed. Resting is a
  routing matter only: readiness, `/v1/models` and `flm_engine_up` follow the
  health checks, so a client whose requests make every engine fail (a poison
  prompt) cannot make the gateway look down. A success resets the count.
- `ordered` returns, for a model, the healthy engines first (in the route's
  `balance` order, `engines.balance`), then the degraded ones, then the
  unreachable ones, which a caller may still try last since a health mark can be
  stale.
- An engine's capacity (requests it processes at once, when its health check tells:
  llama.cpp's `/props` `total_slots`) is kept from its last report that gave it and
  logged when it changes; `engine_concurrency` uses it as the default cap.
- Logs the first check of every engine, whatever it found (so an engine that is
  unreachable at start is named in the log, with its URL and the reason), then
  every state change (never URLs with credentials, never keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.config.route_settings import Balance
from flm_gateway.engines.adapter import (
    EngineAdapter,
    HealthReport,
    HealthState,
    ModelInfo,
)
from flm_gateway.engines.balance import Balancer, failure_sample, record_latency
from flm_gateway.engines.detect import display_url
from flm_gateway.engines.engine_check import check_engine
from flm_gateway.engines.engine_client import HttpEngineClient
from flm_gateway.engines.registry import adapter_for
from flm_gateway.httpio.http_client import HttpSession

log = logging.getLogger("flm_gateway.engines")

MISS_REFRESH_GAP = 2.0
"""Seconds between model-list refreshes triggered by unknown models."""
DOWN_CHECK_FLOOR = 0.25
"""Shortest time between checks of an engine that is not healthy."""
NUDGE_GAP = 0.5
"""Shortest time between checks that requests wanting an unhealthy engine may trigger."""


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


SessionFactory = Callable[[EngineConfig], HttpSession]
Dial = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens a TCP connection to an engine through its egress."""
DialerFactory = Callable[[EngineConfig], Dial]
ConnectTimeout = Callable[[EngineConfig], float]
"""The connect timeout of an engine (its egress profile's, or its own timeouts.connect)."""


def direct_dialer(config: EngineConfig) -> Dial:
    """Dial engines directly (the `direct` egress)."""
    return asyncio.open_connection


_TIER = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNREACHABLE: 2}


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
    version: str | None = None
    capacity: int | None = None
    """Requests the engine says it processes at once (its last healthy report that said)."""
    models: dict[str, ModelInfo] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    checked_at: float = 0.0
    last_connect_ok: float = 0.0
    models_at: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    connect_timeout: float | None = None
    """Bound of a connect probe; None: `config.timeouts.connect`."""
    in_flight: int = 0
    """Requests this gateway has sent to the engine and not finished (balance: least_busy)."""
    latency: float | None = None
    """Recent time to response head, seconds (balance: latency); None: not measured yet."""
    failures: int = 0
    """Failed requests in a row (passive health)."""
    down_until: float = 0.0
    """Monotonic time before which passive health keeps the engine out."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def reachable(self) -> bool:
        """It answers HTTP (healthy or degraded): its models are listed."""
        return self.state is not HealthState.UNREACHABLE

    @property
    def healthy(self) -> bool:
        """It says it is ready and lists models: routing prefers it."""
        return self.state is HealthState.HEALTHY

    @property
    def tier(self) -> int:
        """Routing order: healthy (0), degraded (1), unreachable or resting (2)."""
        return 2 if self.resting else _TIER[self.state]

    def serves(self, model: str) -> bool:
        return model in self.models or model in self.aliases or model in self.config.models

    def set_models(self, models: Iterable[ModelInfo], at: float) -> None:
        self.models = {m.id: m for m in models}
        self.aliases = {
            alias: m.id
            for m in self.models.values()
            for alias in m.aliases
            if alias not in self.models
        }
        self.models_at = at

    def mark_down(self, reason: str) -> None:
        if self.reachable:
            log.warning("engine %s marked down: %s", self.name, reason)
        self.state, self.detail = HealthState.UNREACHABLE, reason

    @property
    def resting(self) -> bool:
        """Passive health took it out: its `fail_timeout` has not passed, or no health check
        ran since (that check is the half-open probe)."""
        return bool(self.down_until) and (
            self.down_until > time.monotonic() or self.checked_at < self.down_until
        )

    def record_failure(self, reason: str) -> None:
        """A request failed here (`reason`); it counts as a slow latency sample."""
        record_latency(self, failure_sample(self))
        self.failures += 1
        health = self.config.health
        if health.max_fails and self.failures >= health.max_fails and not self.resting:
            self.down_until = time.monotonic() + health.fail_timeout
            log.warning(
                "engine %s failed %d requests in a row (last: %s); tried last for %gs",
                self.name,
                self.failures,
                reason,
                health.fail_timeout,
            )
            asyncio.get_running_loop().call_later(health.fail_timeout, self.wake.set)

    def record_success(self, latency: float) -> None:
        """A request got its response head from here after `latency` seconds."""
        record_latency(self, latency)
        self.failures = 0
        self.down_until = 0.0

    def mark_connect_ok(self) -> None:
        self.last_connect_ok = time.monotonic()
        if not self.reachable and not self.resting:
            self.wake.set()  # it accepts connections again: check it now, not at the next tick


class EngineDirectory:
    """All configured engines and their live state; owns the background checks."""

    def __init__(
        self,
        engines: Sequence[EngineConfig],
        session_factory: SessionFactory,
        dialer_factory: DialerFactory = direct_dialer,
        connect_timeout: ConnectTimeout | None = None,
    ) -> None:
        self._sessions: list[HttpSession] = []
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
        self._balancers: dict[tuple[str, Balance], Balancer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._last_miss_refresh = 0.0
        self._miss_refresh: asyncio.Task[None] | None = None
        self._initial: asyncio.Future[None] | None = None

    # --- lookups (hot path: no I/O) ---

    def get(self, name: str) -> EngineState:
        return self.engines[name]

    def ordered(
        self,
        names: Iterable[str],
        key: str,
        balance: Balance = Balance.ROUND_ROBIN,
        weights: dict[str, int] | None = None,
    ) -> list[EngineState]:
        """Engines by name: healthy ones first in `balance` order (turns kept per `key`),
        then degraded, then unreachable ones (a caller may still try those last: a health
        mark can be stale)."""
        states = sorted((self.engines[name] for name in names), key=lambda s: s.tier)
        healthy = [s for s in states if s.tier == 0]
        if len(healthy) > 1:
            balancer = self._balancers.get((key, balance))
            if balancer is None:
                balancer = self._balancers[(key, balance)] = Balancer(balance, weights or {})
            healthy = balancer.order(healthy)
        return healthy + states[len(healthy) :]

    def nudge(self, state: EngineState) -> None:
        """A request wanted `state` but it is not healthy: check it again soon (at most every
        NUDGE_GAP s), so an engine that came back is used again within moments."""
        if not state.healthy and time.monotonic() - state.checked_at >= NUDGE_GAP:
            state.wake.set()

    def serving(self, model: str) -> list[str]:
        """Names of engines whose model list contains `model` (routing by discovery)."""
        return [name for name, state in self.engines.items() if state.serves(model)]

    def any_healthy(self) -> bool:
        return any(state.healthy for state in self.engines.values())

    def models(self) -> list[tuple[str, EngineState]]:
        """(model id, engine) for every model of every reachable engine, each model once."""
        seen: dict[str, EngineState] = {}
        for state in sorted(self.engines.values(), key=lambda s: s.tier):
            if not state.reachable:
                continue
            for model_id in [*state.models, *state.config.models]:
                seen.setdefault(model_id, state)
        return list(seen.items())

    # --- background work ---

    async def check(self, state: EngineState, refresh_models: bool = False) -> HealthReport:
        """Run one health check of `state` and record the result.

        The model list is fetched again when it is older than `health.models_refresh`,
        when the engine was down, or when `refresh_models` asks for it.
        """
        now = time.monotonic()
        fresh = (
            not refresh_models
            and state.reachable
            and now - state.models_at < state.config.health.models_refresh
        )
        report = await check_engine(
            state.adapter,
            state.client,
            known=list(state.models.values()) if fresh else None,
            declared=state.config.models,
        )
        first, was = state.checked_at == 0.0, state.state
        state.state, state.detail, state.checked_at = report.state, report.detail, time.monotonic()
        state.version = report.version or state.version
        if report.capacity is not None and report.capacity != state.capacity:
            log.info(
                "engine %s reports a capacity of %d requests at once: its default concurrency "
                "cap (unless security.resources sets one)",
                state.name,
                report.capacity,
            )
            state.capacity = report.capacity
        if report.models is not None:
            state.set_models(report.models, state.checked_at)
        if first or report.state is not was:  # the first check is logged whatever it found
            level = logging.INFO if report.state is HealthState.HEALTHY else logging.WARNING
            log.log(
                level,
                "engine %s is %s: %s (at %s)",
                state.name,
                report.state,
                report.detail or "ok",
                display_url(state.config.url),
            )
        return report

    async def check_all(self, refresh_models: bool = False) -> None:
        await asyncio.gather(*(self.check(s, refresh_models) for s in self.engines.values()))

    def refresh_on_miss(self) -> Awaitable[None] | None:
        """Start (at most every MISS_REFRESH_GAP s) a refresh of every model list; returns it."""
        now = time.monotonic()
        if self._miss_refresh is not None and not self._miss_refresh.done():
            return self._miss_refresh
        if now - self._last_miss_refresh < MISS_REFRESH_GAP:
            return None
        self._last_miss_refresh = now
        self._miss_refresh = asyncio.ensure_future(self.check_all(refresh_models=True))
        return self._miss_refresh

    async def _watch(self, state: EngineState) -> None:
        settings = state.config.health
        if self._initial is not None:
            await asyncio.gather(self._initial, return_exceptions=True)
        while True:
            delay = settings.interval
            if not state.healthy:
                delay = min(delay, max(DOWN_CHECK_FLOOR, delay / 4))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), delay)
            state.wake.clear()
            try:
                await self.check(state)
            except Exception:  # a checker bug must not stop the other checks
                log.exception("health check of engine %s failed", state.name)

    def start(self) -> None:
        """Check every engine now, then periodically (call inside the running loop)."""
        self._initial = asyncio.ensure_future(self.check_all())
        self._tasks = [
            asyncio.create_task(self._watch(state), name=f"health:{name}")
            for name, state in self.engines.items()
        ]

    async def settled(self, timeout: float) -> None:
        """Wait (at most `timeout` s) for the first check of every engine, if it still runs."""
        initial = self._initial
        if initial is not None and not initial.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(initial), timeout)

    async def stop_checks(self) -> None:
        """Stop the periodic checks; the sessions stay open for requests still using them."""
        tasks = [*self._tasks, *([self._initial] if self._initial is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []

    async def close(self) -> None:
        await self.stop_checks()
        await asyncio.gather(*(session.close() for session in self._sessions))
