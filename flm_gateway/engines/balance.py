"""Which replica of a route goes first: the `balance:` strategies.

Policy (the healthy replicas of one route, at each request; no I/O, O(replicas)):
- `round_robin`: each in turn.
- `least_busy`: the one with the fewest requests in flight through this gateway;
  ties go round robin, so idle replicas share the load instead of the first taking it.
- `latency`: the one with the lowest recent time to response head (an exponentially
  weighted average); a failed request counts as a slow sample (`FAILURE_PENALTY`, or
  twice the replica's average when that is more: failures in a row push it up
  geometrically), so a replica that fails fast soon looks slowest. A replica never measured goes
  first (it is measured), and one request in `EXPLORE_EVERY` goes round robin, so a
  replica that was slow once is measured again.
- `weighted`: nginx's smooth weighted round robin: over any window a replica gets
  its weight's share, interleaved (weights 5,1,1 give a a b a c a a, not a a a a a b c).
The other candidates follow in their order; routing puts degraded and unreachable
engines, then fallbacks, after these.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from flm_gateway.config.route_settings import Balance

EXPLORE_EVERY = 20
"""One request in this many ignores measured latency (balance: latency)."""
FAILURE_PENALTY = 5.0
"""Seconds a failed request counts as, in a replica's latency average."""
LATENCY_WEIGHT = 0.3
"""Weight of the newest sample in a replica's latency average."""


class Replica(Protocol):
    """What a strategy reads of an engine."""

    @property
    def name(self) -> str: ...

    in_flight: int
    latency: float | None


MAX_LATENCY = 3600.0
"""Ceiling of a replica's latency average (failures double it up to here)."""


def failure_sample(replica: Replica) -> float:
    """The latency sample a failed request counts as on `replica`."""
    return min(MAX_LATENCY, max(FAILURE_PENALTY, 2 * (replica.latency or 0.0)))


def record_latency(replica: Replica, seconds: float) -> None:
    """Fold one sample into `replica.latency` (a failure: `FAILURE_PENALTY`)."""
    previous = replica.latency
    replica.latency = (
        seconds if previous is None else previous + LATENCY_WEIGHT * (seconds - previous)
    )


@dataclass
class Balancer:
    """The turn state of one route (one per route and model name)."""

    strategy: Balance = Balance.ROUND_ROBIN
    weights: dict[str, int] = field(default_factory=dict)
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    _current: dict[str, int] = field(default_factory=dict)

    def order[R: Replica](self, replicas: Sequence[R]) -> list[R]:
        """`replicas` (healthy, in file order) with the one to try first in front."""
        if len(replicas) < 2:
            return list(replicas)
        turn = next(self._turn)
        if self.strategy is Balance.LEAST_BUSY:
            return _first_of_ties(sorted(replicas, key=lambda r: r.in_flight), turn)
        if self.strategy is Balance.LATENCY:
            ranked = sorted(replicas, key=lambda r: -1.0 if r.latency is None else r.latency)
            if turn % EXPLORE_EVERY == EXPLORE_EVERY - 1:  # measure the others again
                skip = 1 + (turn // EXPLORE_EVERY) % (len(ranked) - 1)
                return [*ranked[skip:], *ranked[:skip]]
            return ranked
        if self.strategy is Balance.WEIGHTED:
            return self._smooth_weighted(replicas)
        start = turn % len(replicas)
        return [*replicas[start:], *replicas[:start]]

    def _smooth_weighted[R: Replica](self, replicas: Sequence[R]) -> list[R]:
        total = 0
        best: R | None = None
        for replica in replicas:
            weight = self.weights.get(replica.name, 1)
            total += weight
            current = self._current.get(replica.name, 0) + weight
            self._current[replica.name] = current
            if best is None or current > self._current[best.name]:
                best = replica
        if best is None:
            return []
        self._current[best.name] -= total
        return [best, *(r for r in replicas if r is not best)]


def _first_of_ties[R: Replica](ranked: list[R], turn: int) -> list[R]:
    """`ranked` (by in-flight count) with the tied least busy ones taking turns in front."""
    ties = [r for r in ranked if r.in_flight == ranked[0].in_flight]
    first = ties[turn % len(ties)]
    return [first, *(r for r in ranked if r is not first)]
