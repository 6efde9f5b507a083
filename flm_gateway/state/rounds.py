"""Paced rounds: many callers, one piece of work, a bounded rate.

`PacedRounds(work, interval, timeout)` runs `work` (an async function answering
True or False) on behalf of any number of callers:
- a caller that `join`s gets the result of a round that *starts after* it joined,
  so what the work reads is at least as new as the caller's question;
- callers that join while a round waits or runs share the next round: however
  many ask, one round at a time runs;
- rounds start at least `interval` apart, so the work runs at most 1/`interval`
  times a second whatever the callers do;
- a caller waits at most `timeout` and then gets False (the round goes on).
A round whose work raises answers False. Used by `StateService` to look unknown
API keys up in the store without letting unauthenticated clients turn every
request into a store read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("flm_gateway.state")


class PacedRounds:
    def __init__(
        self,
        work: Callable[[], Awaitable[bool]],
        interval: float,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._work = work
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._next: asyncio.Future[bool] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._last_start = -float("inf")
        self.rounds = 0
        """Rounds started so far (for tests and metrics)."""

    async def join(self) -> bool:
        """The result of a round that starts after this call; False after `timeout`."""
        upcoming = self._next
        if upcoming is None:
            upcoming = self._next = asyncio.get_running_loop().create_future()
            if self._runner is None or self._runner.done():
                self._runner = asyncio.create_task(self._run(), name="flm-paced-rounds")
        try:
            return await asyncio.wait_for(asyncio.shield(upcoming), self._timeout)
        except TimeoutError:
            return False

    async def _run(self) -> None:
        while (upcoming := self._next) is not None:
            delay = self._last_start + self._interval - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)  # callers joining meanwhile share this round
            self._next = None  # from here on, callers wait for the round after this one
            self._last_start = self._clock()
            self.rounds += 1
            result = False
            try:
                result = await self._work()
            except Exception:
                log.exception("a paced round failed")
            finally:  # stopped mid-round too: its callers get False now, not at their timeout
                if not upcoming.done():
                    upcoming.set_result(result)

    async def stop(self) -> None:
        """Stop running rounds; whoever still waits gets False."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        upcoming, self._next = self._next, None
        if upcoming is not None and not upcoming.done():
            upcoming.set_result(False)
