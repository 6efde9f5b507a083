"""A cap on concurrent requests per engine, with a bounded, time-limited wait queue.

Policy (on `request`, right after routing chose an engine, `flm.route.engine`):
an engine's cap is `security.resources.engines[<name>].max_concurrent`, else
`security.resources.max_concurrent_per_engine`, else the engine's own capacity when
its health checks report one (llama.cpp: `/props` `total_slots`, i.e. `-np`; it
follows every check, see `engines.directory`), else there is no cap (vLLM, Ollama,
LM Studio and generic OpenAI servers tell no capacity and queue in the engine). An
explicit value always wins over what the engine says. A request under
the cap proceeds; over it, it waits in a first-in-first-out queue of at most
`max_queue` (`max_queue_per_engine`) for up to `queue_timeout`. A full queue or
a timeout answers 503 `engine_busy` with `Retry-After`. The slot is held until
the response ends (after the last streamed chunk) or the flow errors. Writes
`flm.concurrency.engine` (the engine whose slot the flow holds).
On `flm_failover` (a retry on another engine) the slot moves: the failed engine's
is freed and one of the next engine's is taken, with the same queue and limits
(a full queue or a timeout answers 503 and ends the retries).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field

from mitmproxy import http

from flm_gateway.config.security_settings import ResourceSettings
from flm_gateway.core.errors import error_response
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import CONCURRENCY_ENGINE, FAILOVER_RESEND, ROUTE_ENGINE
from flm_gateway.proxy.runtime import Runtime


@dataclass
class EngineSlots:
    """Slots of one engine: `active` in flight, `waiters` in FIFO order."""

    limit: int
    max_queue: int
    timeout: float
    active: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def try_acquire(self) -> bool:
        if self.active < self.limit and not self.waiters:
            self.active += 1
            return True
        return False

    def release(self) -> None:
        """Free a slot, or hand it straight to the first live waiter (unless the limit
        dropped below what is in flight)."""
        while self.waiters and self.active <= self.limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; `active` is unchanged
                return
        self.active = max(0, self.active - 1)

    def grow(self) -> None:
        """After a reload raised the limit: let waiters in."""
        while self.waiters and self.active < self.limit:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)


class EngineConcurrency:
    def __init__(self) -> None:
        self._settings = ResourceSettings()
        self._directory: EngineDirectory | None = None
        self._slots: dict[str, EngineSlots] = {}

    def prepare(self, runtime: Runtime) -> tuple[ResourceSettings, EngineDirectory]:
        return runtime.loaded.config.security.resources, runtime.directory

    def commit(self, prepared: tuple[ResourceSettings, EngineDirectory]) -> None:
        self._settings, self._directory = prepared
        for name in self._slots:
            self.slots(name)  # applies the new limits; waiters enter if they rose

    def _capacity_of(self, engine: str) -> int | None:
        """What the engine says it processes at once (its latest health check), if it says."""
        state = self._directory.engines.get(engine) if self._directory is not None else None
        return state.capacity if state is not None else None

    def _limit_of(self, engine: str) -> tuple[int, int, float] | None:
        settings = self._settings
        own = settings.engines.get(engine)
        limit = own.max_concurrent if own else settings.max_concurrent_per_engine
        if limit is None:
            limit = self._capacity_of(engine)
        if limit is None:
            return None
        max_queue = own.max_queue if own and own.max_queue is not None else None
        timeout = own.queue_timeout if own and own.queue_timeout is not None else None
        return (
            limit,
            settings.max_queue_per_engine if max_queue is None else max_queue,
            settings.queue_timeout if timeout is None else timeout,
        )

    def slots(self, engine: str) -> EngineSlots | None:
        """The engine's slots under its current limits (config, else the engine's capacity,
        which a health check may have changed since the last request); None: no cap."""
        limits = self._limit_of(engine)
        slots = self._slots.get(engine)
        if limits is None:
            if slots is not None and slots.waiters:  # the cap went away: nobody waits
                slots.limit = slots.active + len(slots.waiters)
                slots.grow()
            return None
        if slots is None:
            slots = self._slots[engine] = EngineSlots(*limits)
        elif (slots.limit, slots.max_queue, slots.timeout) != limits:
            slots.limit, slots.max_queue, slots.timeout = limits
            slots.grow()
        return slots

    @fail_closed(503)
    async def request(self, flow: http.HTTPFlow) -> None:
        engine = ROUTE_ENGINE.get(flow)
        if flow.response is not None or engine is None or CONCURRENCY_ENGINE.is_set(flow):
            return
        slots = self.slots(engine)
        if slots is None:
            return
        if slots.try_acquire():
            CONCURRENCY_ENGINE.set(flow, engine)
            return
        if len(slots.waiters) >= slots.max_queue:
            flow.response = self._busy(engine, slots)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), slots.timeout)
        except TimeoutError:
            self._give_up(waiter, slots)
            flow.response = self._busy(engine, slots)
            return
        except asyncio.CancelledError:
            self._give_up(waiter, slots)
            raise
        CONCURRENCY_ENGINE.set(flow, engine)

    @fail_closed(503)
    async def flm_failover(self, flow: http.HTTPFlow) -> None:
        if not FAILOVER_RESEND.get(flow):
            return
        engine = ROUTE_ENGINE.get(flow)
        if CONCURRENCY_ENGINE.get(flow) == engine:
            return
        self._finish(flow)
        await self.request(flow)

    @staticmethod
    def _give_up(waiter: asyncio.Future[None], slots: EngineSlots) -> None:
        if waiter.done() and not waiter.cancelled():
            slots.release()  # the slot arrived just as we gave up: pass it on
        else:
            waiter.cancel()

    def _busy(self, engine: str, slots: EngineSlots) -> http.Response:
        return error_response(
            503,
            f"The engine {engine!r} is at capacity; retry shortly.",
            code="engine_busy",
            headers={"retry-after": str(max(1, math.ceil(min(slots.timeout, 5.0))))},
        )

    def _finish(self, flow: http.HTTPFlow) -> None:
        engine = CONCURRENCY_ENGINE.pop(flow)
        if engine is not None and engine in self._slots:
            self._slots[engine].release()

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)
