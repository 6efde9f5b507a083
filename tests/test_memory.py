"""memory.Reclaimer: collects and trims only after growth, at most every interval; the trim
really returns freed pages (read from /proc)."""

from __future__ import annotations

import gc
from pathlib import Path

from flm_gateway.observability.memory import RECLAIM_GROWTH, RECLAIM_INTERVAL, Allocator, Reclaimer

MiB = 1024 * 1024


class FakeAllocator(Allocator):
    def __init__(self) -> None:
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1


def test_reclaims_only_after_growth_and_not_twice_in_an_interval() -> None:
    resident = [100 * MiB]
    now = [0.0]
    allocator = FakeAllocator()
    reclaimer = Reclaimer(lambda: resident[0], allocator, clock=lambda: now[0])
    assert not reclaimer.tick()  # the first reading is the level
    resident[0] += RECLAIM_GROWTH - 1
    assert not reclaimer.tick()
    resident[0] += 2
    assert reclaimer.tick() and allocator.trims == 1
    resident[0] += 2 * RECLAIM_GROWTH  # still high: the attack goes on
    now[0] += RECLAIM_INTERVAL / 2
    assert not reclaimer.tick()
    now[0] += RECLAIM_INTERVAL
    assert reclaimer.tick() and allocator.trims == 2
    resident[0] = 50 * MiB  # falling: the level follows it down
    assert not reclaimer.tick()
    resident[0] = 50 * MiB + RECLAIM_GROWTH + 1
    now[0] += RECLAIM_INTERVAL
    assert reclaimer.tick()


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_cyclic_garbage_holding_buffers_is_given_back() -> None:
    """Buffers held by reference cycles (as mitmproxy's flows are) stay resident until a
    collection; the reclaimer's collection and trim hand them back."""
    allocator = Allocator()
    assert allocator.available  # glibc: this machine's C library
    # Hand back what earlier tests freed first: pages kept free in the heap would take the
    # burst below without growing the resident size (seen in a full run on Python 3.12).
    gc.collect()
    allocator.trim()
    gc.disable()
    try:
        before = _rss()
        for _ in range(200):  # 200 cycles, each holding 1 MiB in small pieces
            node: dict[str, object] = {"data": [bytes(4096) for _ in range(256)]}
            node["self"] = node
        del node
        grown = _rss()
        assert grown - before > 150 * MiB
        reclaimer = Reclaimer(_rss)
        reclaimer._level = before  # the level before the burst
        assert reclaimer.tick()
        assert _rss() - before < 50 * MiB
    finally:
        gc.enable()
