"""The scenarios other projects publish, run on the targets `bench.suite` started.

Each scenario measures direct, nginx and flm-gateway one after the other, once, and
returns a `Scenario`: for each metric, one value per target (the report adds the
ratios). The named scenarios:

- `gomodel` (GoModel's published bench): 8,000 chat completions at c=10; p50, p99, req/s.
- `onthebench` (onthebench's): added p99 latency at c=1 (3,000 requests), added p99
  time to first token over 400 short streams at c=1, and the most concurrent SSE
  streams sustained: 64, 128, ... up to a cap, all started at once, each a 2 s paced
  stream; a level is sustained when every stream ends with `[DONE]` and no stream waits
  longer than `stall_ms` for an event.
- `memory`: RSS right after start (largest process and all of them) and the peak RSS
  while `memory_streams` concurrent streams run (sampled every 50 ms).
- `soak`: `soak_requests` requests at c=32 after a warm-up, RSS read every `soak_step`
  requests; the slope per 10k requests (least squares) and the largest distance from the
  first sample.
`startup` and `workers` start their own processes: see `bench.scaling`.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import procfs
from bench.load import concurrent_streams, run_wrk, sse_streams
from bench.processes import Child, Processes
from bench.targets import Target

MB = 1_000_000
SHORT_STREAM = 4
"""Time-to-first-token streams need not be long: 4 chunks, the engine's 2 ms apart."""


@dataclass(frozen=True)
class FieldSettings:
    gomodel_requests: int = 8000
    gomodel_connections: int = 10
    tail_requests: int = 3000
    ttft_streams: int = 400
    stream_levels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    stream_chunks: int = 20
    stream_chunk_delay: float = 0.1
    stall_ms: float = 2000.0
    memory_streams: int = 512
    soak_warmup: int = 10_000
    soak_requests: int = 100_000
    soak_step: int = 10_000
    soak_connections: int = 32
    startup_runs: int = 5
    workers: tuple[int, ...] = (1,)

    @classmethod
    def quick(cls) -> FieldSettings:
        return cls(
            gomodel_requests=800,
            tail_requests=300,
            ttft_streams=40,
            stream_levels=(16, 32),
            stream_chunks=5,
            memory_streams=32,
            soak_warmup=500,
            soak_requests=2000,
            soak_step=1000,
            startup_runs=1,
        )


@dataclass
class Scenario:
    """One scenario's figures: `values[metric][target]`, plus notes for the report."""

    name: str
    title: str
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    """Counts are stored as int (shown without decimals), measures as float."""
    notes: list[str] = field(default_factory=list)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Per target, (requests served, RSS MB) samples: the soak's raw data."""

    def put(self, metric: str, target: str, value: float) -> None:
        self.values.setdefault(metric, {})[target] = value


@dataclass
class Bench:
    """What every scenario works on: the started targets and where to start more."""

    procs: Processes
    workdir: Path
    engine: Child
    engine_url: str
    targets: dict[str, Target]
    log: Callable[[str], None]


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1) of `values`; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))  # ceil without float surprises
    return ordered[int(rank) - 1]


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope dy/dx of `points`; 0 for fewer than two distinct x."""
    if len(points) < 2:
        return 0.0
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def drift(points: Sequence[tuple[float, float]]) -> float:
    """The largest distance of any y from the first y (0 for no points)."""
    return max((abs(y - points[0][1]) for _, y in points), default=0.0)


def _added(scenario: Scenario, metric: str, added: str) -> None:
    """Put `added` = each target's `metric` minus direct's."""
    base = scenario.values[metric]["direct"]
    for target, value in scenario.values[metric].items():
        scenario.put(added, target, value - base)


def gomodel(bench: Bench, settings: FieldSettings) -> Scenario:
    n, c = settings.gomodel_requests, settings.gomodel_connections
    scenario = Scenario("gomodel", f"GoModel's: {n:,} requests at c={c}")
    for name, target in bench.targets.items():
        bench.log(f"gomodel: {name}")
        run_wrk(target.url, c, 1)  # warm-up
        result = run_wrk(target.url, c, 600, requests=n)
        scenario.put("req/s", name, result.rps)
        scenario.put("p50 ms", name, result.p50_ms)
        scenario.put("p99 ms", name, result.p99_ms)
        scenario.put("errors", name, result.errors)
    return scenario


def _sustained_level(bench: Bench, target: Target, settings: FieldSettings) -> tuple[int, int, str]:
    """The largest level of concurrent streams `target` sustained, how many of them were
    open at once at that level, and why the ramp stopped."""
    best, best_open, reason = 0, 0, f"cap {settings.stream_levels[-1]} reached"
    for level in settings.stream_levels:
        result = concurrent_streams(
            target.url, level, settings.stream_chunks, settings.stream_chunk_delay
        )
        bench.log(
            f"  {level} streams: {result.whole} whole, {len(result.failures)} failed, "
            f"longest gap {result.max_gap_ms:.0f} ms, {result.peak_open} open at once"
        )
        if not result.sustained(settings.stall_ms):
            failed = f"{level - result.whole} of {level} not whole"
            first = f" (first failure: {result.failures[0][:120]})" if result.failures else ""
            reason = f"{level}: {failed}, longest gap {result.max_gap_ms:,.0f} ms{first}"
            break
        best, best_open = level, result.peak_open
    return best, best_open, reason


def onthebench(bench: Bench, settings: FieldSettings) -> Scenario:
    scenario = Scenario("onthebench", "onthebench's: added tail latency and concurrent streams")
    for name, target in bench.targets.items():
        bench.log(f"onthebench: {name}")
        tail = run_wrk(target.url, 1, 600, requests=settings.tail_requests)
        scenario.put("p99 c=1 ms", name, tail.p99_ms)
        streams = sse_streams(target.url, settings.ttft_streams, chunks=SHORT_STREAM)
        scenario.put("TTFT p99 ms", name, percentile([s.ttfc_ms for s in streams], 0.99))
        sustained, at_once, reason = _sustained_level(bench, target, settings)
        scenario.put("concurrent SSE streams sustained", name, sustained)
        scenario.put("of them open at once", name, at_once)
        scenario.notes.append(f"{name}: stream ramp stopped at {reason}")
    _added(scenario, "p99 c=1 ms", "added p99 c=1 ms")
    _added(scenario, "TTFT p99 ms", "added TTFT p99 ms")
    return scenario


class PeakRss(threading.Thread):
    """Samples a target's RSS (all its processes) every `interval` s until stopped."""

    def __init__(self, target: Target, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.target, self.interval = target, interval
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_kib = max(self.peak_kib, self.target.memory().rss_kib)
            self._stop_event.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()


def memory(bench: Bench, settings: FieldSettings, idle: dict[str, list[procfs.Memory]]) -> Scenario:
    """`idle`: per target, each of its processes right after start."""
    n = settings.memory_streams
    scenario = Scenario("memory", f"Memory: RSS idle, peak under {n} concurrent streams")
    for name, target in bench.targets.items():
        if target.main is None:
            continue
        each = idle[name]
        scenario.put("RSS idle, largest process MB", name, max(m.rss_kib for m in each) * 1024 / MB)
        scenario.put("RSS idle, all processes MB", name, sum(m.rss_kib for m in each) * 1024 / MB)
        scenario.put("PSS idle, all processes MB", name, sum(m.pss_kib for m in each) * 1024 / MB)
        bench.log(f"memory: {name}, {n} streams")
        with PeakRss(target) as peak:
            level = concurrent_streams(
                target.url, n, settings.stream_chunks, settings.stream_chunk_delay
            )
        scenario.put(f"peak RSS under {n} streams MB", name, peak.peak_kib * 1024 / MB)
        scenario.put(f"streams whole of {n}", name, level.whole)
    return scenario


def soak(bench: Bench, settings: FieldSettings) -> Scenario:
    step, total = settings.soak_step, settings.soak_requests
    scenario = Scenario("soak", f"Soak: {total:,} requests at c={settings.soak_connections}")
    for name, target in bench.targets.items():
        c = settings.soak_connections
        bench.log(f"soak: {name}, warm-up {settings.soak_warmup:,} requests")
        run_wrk(target.url, c, 600, requests=settings.soak_warmup)
        points: list[tuple[int, float]] = [(0, target.memory().rss_kib * 1024 / MB)]
        errors, seconds = 0, 0.0
        while points[-1][0] < total:
            result = run_wrk(target.url, c, 600, requests=min(step, total - points[-1][0]))
            errors, seconds = errors + result.errors, seconds + result.seconds
            points.append((points[-1][0] + result.requests, target.memory().rss_kib * 1024 / MB))
            bench.log(f"  {points[-1][0]:,} requests: RSS {points[-1][1]:.1f} MB (0: direct)")
        if target.main is not None:
            scenario.series[name] = points
            per_10k = [(count / 10_000, rss) for count, rss in points]
            scenario.put("RSS slope MB per 10k requests", name, slope(per_10k))
            scenario.put("RSS largest distance from start MB", name, drift(points))
            scenario.put("RSS after warm-up MB", name, points[0][1])
        scenario.put("req/s", name, points[-1][0] / seconds if seconds else float("nan"))
        scenario.put("errors", name, errors)
    return scenario
