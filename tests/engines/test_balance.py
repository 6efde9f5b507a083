"""The balance strategies: which healthy replica of a route goes first."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from flm_gateway.config.route_settings import Balance
from flm_gateway.engines.balance import (
    EXPLORE_EVERY,
    Balancer,
    failure_sample,
    record_latency,
)


@dataclass
class Replica:
    name: str
    in_flight: int = 0
    latency: float | None = None


def firsts(balancer: Balancer, replicas: list[Replica], turns: int) -> list[str]:
    return [balancer.order(replicas)[0].name for _ in range(turns)]


def test_round_robin_takes_turns_and_keeps_every_replica() -> None:
    replicas = [Replica("a"), Replica("b"), Replica("c")]
    balancer = Balancer(Balance.ROUND_ROBIN)
    assert firsts(balancer, replicas, 6) == ["a", "b", "c", "a", "b", "c"]
    assert sorted(r.name for r in balancer.order(replicas)) == ["a", "b", "c"]


def test_least_busy_prefers_fewest_in_flight_and_shares_ties() -> None:
    busy, idle1, idle2 = Replica("busy", in_flight=5), Replica("i1"), Replica("i2")
    balancer = Balancer(Balance.LEAST_BUSY)
    chosen = firsts(balancer, [busy, idle1, idle2], 10)
    assert "busy" not in chosen
    assert Counter(chosen) == {"i1": 5, "i2": 5}  # ties go round robin, not to the first


def test_weighted_is_smooth_and_exact_over_a_window() -> None:
    replicas = [Replica("a"), Replica("b"), Replica("c")]
    balancer = Balancer(Balance.WEIGHTED, {"a": 5, "b": 1, "c": 1})
    window = firsts(balancer, replicas, 7)
    assert Counter(window) == {"a": 5, "b": 1, "c": 1}
    assert window == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's interleaving


def test_latency_prefers_the_fastest_and_explores_now_and_then() -> None:
    fast, slow = Replica("fast", latency=0.01), Replica("slow", latency=0.5)
    balancer = Balancer(Balance.LATENCY)
    chosen = firsts(balancer, [slow, fast], EXPLORE_EVERY * 2)
    assert chosen.count("fast") >= EXPLORE_EVERY * 2 - 2 and "slow" in chosen


def test_latency_measures_a_new_replica_first() -> None:
    known, new = Replica("known", latency=0.01), Replica("new")
    assert Balancer(Balance.LATENCY).order([known, new])[0] is new


def test_a_failure_makes_a_fast_replica_look_slow() -> None:
    """A replica that fails at once must not look fastest (a black hole), even next to a
    working one whose answers take 12 s (long non-streamed completions)."""
    failing, working = Replica("failing", latency=0.001), Replica("working", latency=12.0)
    for _ in range(8):
        record_latency(failing, failure_sample(failing))
    assert Balancer(Balance.LATENCY).order([failing, working])[0] is working
