"""state.rounds.PacedRounds: shared, paced, fresh-after-asking rounds of work."""

from __future__ import annotations

import asyncio
import time

from flm_gateway.state.rounds import PacedRounds


class Work:
    """Records when each round started and what callers had asked before it."""

    def __init__(self, result: bool = True, hold: asyncio.Event | None = None) -> None:
        self.starts: list[float] = []
        self.result = result
        self.hold = hold

    async def __call__(self) -> bool:
        self.starts.append(time.monotonic())
        if self.hold is not None:
            await self.hold.wait()
        return self.result


async def test_concurrent_callers_share_one_round() -> None:
    work = Work()
    rounds = PacedRounds(work, interval=0.01, timeout=5)
    results = await asyncio.gather(*(rounds.join() for _ in range(500)))
    assert all(results) and rounds.rounds == 1


async def test_a_caller_gets_a_round_that_started_after_it_asked() -> None:
    hold = asyncio.Event()
    work = Work(hold=hold)
    rounds = PacedRounds(work, interval=0.0, timeout=5)
    first = asyncio.create_task(rounds.join())
    while not work.starts:  # the first round is running (reading the store, say)
        await asyncio.sleep(0)
    late = [asyncio.create_task(rounds.join()) for _ in range(50)]
    await asyncio.sleep(0)
    hold.set()
    assert await first and all(await asyncio.gather(*late))
    assert rounds.rounds == 2  # the late callers did not take the running round's answer


async def test_rounds_are_paced() -> None:
    work = Work()
    rounds = PacedRounds(work, interval=0.02, timeout=5)
    for _ in range(5):
        assert await rounds.join()
    gaps = [b - a for a, b in zip(work.starts, work.starts[1:], strict=False)]
    assert len(gaps) == 4 and all(gap >= 0.02 - 1e-3 for gap in gaps)


async def test_timeout_failure_and_stop_answer_false() -> None:
    hold = asyncio.Event()
    slow = PacedRounds(Work(hold=hold), interval=0.0, timeout=0.05)
    assert await slow.join() is False  # the store did not answer in time
    assert await PacedRounds(Work(result=False), 0.0, 5).join() is False

    async def broken() -> bool:
        raise RuntimeError("bug")

    assert await PacedRounds(broken, 0.0, 5).join() is False
    stopping = PacedRounds(Work(hold=hold), 0.0, 5)
    pending = asyncio.create_task(stopping.join())
    await asyncio.sleep(0.01)
    await stopping.stop()
    assert await pending is False
    await slow.stop()
