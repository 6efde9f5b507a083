"""The rounds of the `standard` scenario and the records of a run (`bench.suite` runs them).

A round measures every target once, in an order rotated from round to round so that no
target always runs right after another's load. For each target a round runs: a short
warm-up at c=32, the measured c=32 window (req/s, CPU time of proxy, engine, client and
the whole box), the c=1 window (latency), then the paced SSE streams at c=1. Memory is
read after start-up (idle, with Pss per process) and after the run (VmRSS, VmHWM,
RssAnon).
"""

from __future__ import annotations

import math
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

from bench import procfs
from bench.field import Scenario
from bench.load import StreamTiming, WrkResult, run_wrk, sse_streams
from bench.processes import Child
from bench.targets import Target


@dataclass(frozen=True)
class Settings:
    rounds: int
    warmup_s: float
    load_s: float
    latency_s: float
    streams: int
    chunks: int = 64
    chunk_delay: float = 0.002
    connections: int = 32
    long_streams: int = 2
    long_chunks: int = 1000
    long_chunk_delay: float = 0.001

    @classmethod
    def full(cls) -> Settings:
        return cls(rounds=3, warmup_s=1, load_s=5, latency_s=4, streams=25)

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            rounds=1, warmup_s=1, load_s=1, latency_s=1, streams=4, long_streams=1, long_chunks=200
        )


@dataclass
class Window:
    """CPU seconds spent by each party during one measured window of `seconds`."""

    seconds: float
    proxy_s: float
    engine_s: float
    client_s: float
    box_percent: float

    def percent(self, cpu_s: float) -> float:
        return 100.0 * cpu_s / self.seconds if self.seconds else 0.0

    @property
    def other_percent(self) -> float:
        own = self.percent(self.proxy_s + self.engine_s + self.client_s)
        return max(0.0, self.box_percent - own)


@dataclass
class Round:
    loaded: WrkResult
    loaded_window: Window
    latency: WrkResult
    latency_window: Window
    streams: list[StreamTiming]
    streams_window: Window
    long_streams: list[StreamTiming]
    long_window: Window

    @property
    def ttfc_ms(self) -> float:
        return statistics.median(s.ttfc_ms for s in self.streams)

    @property
    def ttfc_p99_ms(self) -> float:
        """The 99th percentile (nearest rank) of the paced streams' TTFC."""
        ordered = sorted(s.ttfc_ms for s in self.streams)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]

    @property
    def proxy_us_per_chunk(self) -> float:
        """Proxy CPU per SSE event over the long streams (their per-request cost, spread
        over a thousand events, is ~2 µs of it)."""
        events = sum(s.events for s in self.long_streams)
        return 1e6 * self.long_window.proxy_s / events if events else 0.0

    @property
    def proxy_us_per_paced_chunk(self) -> float:
        """Proxy CPU of the paced-stream window per SSE event: 64 events per request, so
        the request's own cost is in it (the figure the issue quoted)."""
        events = sum(s.events for s in self.streams)
        return 1e6 * self.streams_window.proxy_s / events if events else 0.0

    @property
    def stream_total_ms(self) -> float:
        return statistics.median(s.total_ms for s in self.streams)


@dataclass
class TargetResult:
    name: str
    description: str
    startup_s: float
    idle: procfs.Memory | None
    after: procfs.Memory | None = None
    rounds: list[Round] = field(default_factory=list)
    idle_each: list[procfs.Memory] = field(default_factory=list)
    """Each of its processes right after start (with Pss)."""


@dataclass
class RunResult:
    settings: Settings
    started: str
    machine: dict[str, str]
    load_before: str
    load_after: str = ""
    seconds: float = 0.0
    targets: dict[str, TargetResult] = field(default_factory=dict)
    scenarios: list[Scenario] = field(default_factory=list)
    """The published scenarios run after the rounds (`bench.field`, `bench.scaling`)."""


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def window[T](
    target: Target,
    engine: Child,
    measure: Callable[[], T],
    client_cpu: Callable[[T], float] | None = None,
) -> tuple[T, Window]:
    """`measure()` and the CPU each party spent meanwhile; the client is wrk
    (`client_cpu` of its result) or, without `client_cpu`, this process."""
    proxy0, engine0, own0 = target.cpu_seconds(), procfs.cpu_seconds(engine.pid), _own_cpu()
    box0, start = procfs.box_jiffies(), time.perf_counter()
    result = measure()
    elapsed = time.perf_counter() - start
    proxy1, engine1, own1 = target.cpu_seconds(), procfs.cpu_seconds(engine.pid), _own_cpu()
    box1 = procfs.box_jiffies()
    window = Window(
        seconds=elapsed,
        proxy_s=proxy1 - proxy0,
        engine_s=engine1 - engine0,
        client_s=client_cpu(result) if client_cpu else own1 - own0,
        box_percent=procfs.box_busy_percent(box0, box1),
    )
    return result, window


def wrk_cpu(result: WrkResult) -> float:
    return result.client_cpu_s


def measure_round(target: Target, engine: Child, settings: Settings) -> Round:
    run_wrk(target.url, settings.connections, settings.warmup_s)
    loaded, loaded_window = window(
        target,
        engine,
        lambda: run_wrk(target.url, settings.connections, settings.load_s),
        wrk_cpu,
    )
    latency, latency_window = window(
        target, engine, lambda: run_wrk(target.url, 1, settings.latency_s), wrk_cpu
    )
    streams, streams_window = window(
        target, engine, lambda: sse_streams(target.url, settings.streams)
    )
    long_streams, long_window = window(
        target,
        engine,
        lambda: sse_streams(
            target.url,
            settings.long_streams,
            chunks=settings.long_chunks,
            chunk_delay=settings.long_chunk_delay,
        ),
    )
    target.check_alive()
    engine.check_alive()
    return Round(
        loaded,
        loaded_window,
        latency,
        latency_window,
        streams,
        streams_window,
        long_streams,
        long_window,
    )


def machine_facts() -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "nproc": str(procfs.cpu_count()),
        "cpu": procfs.cpu_model(),
        "kernel": procfs.kernel(),
        "python": platform.python_version(),
        "mitmproxy": version("mitmproxy"),
        "nginx": nginx.stderr.strip().removeprefix("nginx version: "),
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0].split(" [")[0].removeprefix("wrk "),
        "aiohttp": version("aiohttp"),
        "uvloop (engine and SSE client)": version("uvloop"),
    }
