"""Turn a `RunResult` into Markdown: results per target, the issue's targets, the box load.

Every cell is the median over the rounds. "Added" values are paired: in each round the
target's value minus direct's value from the same round, then the median of those
differences, so a round on a busy box does not count against one target alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.measure import Round, RunResult, TargetResult

MB = 1_000_000
MIB = 1024 * 1024


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def signed(value: float) -> str:
    return "-" if value != value else ("+" if value >= 0 else "") + fmt(value)


def ratio(value: float, base: float) -> str:
    if value != value or base != base or base == 0:
        return "-"
    return f"{value / base:.2f}x"


def _per_round(result: TargetResult, metric: Callable[[Round], float]) -> list[float]:
    return [metric(r) for r in result.rounds]


def _added(result: TargetResult, direct: TargetResult, metric: Callable[[Round], float]) -> float:
    pairs = zip(result.rounds, direct.rounds, strict=True)
    return median([metric(mine) - metric(base) for mine, base in pairs])


def proxy_us_per_request_loaded(r: Round) -> float:
    return 1e6 * r.loaded_window.proxy_s / r.loaded.requests if r.loaded.requests else 0.0


def proxy_us_per_request_c1(r: Round) -> float:
    return 1e6 * r.latency_window.proxy_s / r.latency.requests if r.latency.requests else 0.0


def engine_us_per_request(r: Round) -> float:
    return 1e6 * r.loaded_window.engine_s / r.loaded.requests if r.loaded.requests else 0.0


@dataclass(frozen=True)
class Summary:
    """The medians of one target (and its differences from direct)."""

    rps: float
    p50_c1: float
    p99_c1: float
    p50_c32: float
    p99_c32: float
    added_p50_c1: float
    added_p99_c1: float
    proxy_us_c32: float
    proxy_us_c1: float
    engine_us_c32: float
    ttfc: float
    added_ttfc: float
    ttfc_p99: float
    added_ttfc_p99: float
    proxy_us_chunk: float
    proxy_us_paced_chunk: float
    stream_total: float
    errors: int
    rss_idle_mib: float
    anon_idle_mib: float
    rss_after_mib: float
    hwm_mib: float
    startup_s: float

    @classmethod
    def of(cls, result: TargetResult, direct: TargetResult, proxied: bool) -> Summary:
        nan = float("nan")
        return cls(
            rps=median(_per_round(result, lambda r: r.loaded.rps)),
            p50_c1=median(_per_round(result, lambda r: r.latency.p50_ms)),
            p99_c1=median(_per_round(result, lambda r: r.latency.p99_ms)),
            p50_c32=median(_per_round(result, lambda r: r.loaded.p50_ms)),
            p99_c32=median(_per_round(result, lambda r: r.loaded.p99_ms)),
            added_p50_c1=_added(result, direct, lambda r: r.latency.p50_ms),
            added_p99_c1=_added(result, direct, lambda r: r.latency.p99_ms),
            proxy_us_c32=median(_per_round(result, proxy_us_per_request_loaded))
            if proxied
            else nan,
            proxy_us_c1=median(_per_round(result, proxy_us_per_request_c1)) if proxied else nan,
            engine_us_c32=median(_per_round(result, engine_us_per_request)),
            ttfc=median(_per_round(result, lambda r: r.ttfc_ms)),
            added_ttfc=_added(result, direct, lambda r: r.ttfc_ms),
            ttfc_p99=median(_per_round(result, lambda r: r.ttfc_p99_ms)),
            added_ttfc_p99=_added(result, direct, lambda r: r.ttfc_p99_ms),
            proxy_us_chunk=median(_per_round(result, lambda r: r.proxy_us_per_chunk))
            if proxied
            else nan,
            proxy_us_paced_chunk=median(_per_round(result, lambda r: r.proxy_us_per_paced_chunk))
            if proxied
            else nan,
            stream_total=median(_per_round(result, lambda r: r.stream_total_ms)),
            errors=sum(r.loaded.errors + r.latency.errors for r in result.rounds),
            rss_idle_mib=result.idle.rss_kib / 1024 if result.idle else nan,
            anon_idle_mib=result.idle.anon_kib / 1024 if result.idle else nan,
            rss_after_mib=result.after.rss_kib / 1024 if result.after else nan,
            hwm_mib=result.after.hwm_kib / 1024 if result.after else nan,
            startup_s=result.startup_s if proxied else nan,
        )


def summaries(run: RunResult) -> dict[str, Summary]:
    direct = run.targets["direct"]
    return {
        name: Summary.of(result, direct, proxied=name != "direct")
        for name, result in run.targets.items()
    }


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(run: RunResult, sums: dict[str, Summary]) -> str:
    base = sums["direct"]
    header = [
        "target",
        "req/s c=32",
        "vs direct",
        "p50 c=1 ms",
        "p99 c=1 ms",
        "added p50 c=1 ms",
        "added p99 c=1 ms",
        "p50 c=32 ms",
        "p99 c=32 ms",
        "proxy CPU µs/req c=32",
        "proxy CPU µs/req c=1",
        "errors",
    ]
    rows = [
        [
            name,
            fmt(s.rps),
            ratio(s.rps, base.rps),
            fmt(s.p50_c1),
            fmt(s.p99_c1),
            signed(s.added_p50_c1),
            signed(s.added_p99_c1),
            fmt(s.p50_c32),
            fmt(s.p99_c32),
            fmt(s.proxy_us_c32),
            fmt(s.proxy_us_c1),
            str(s.errors),
        ]
        for name, s in sums.items()
    ]
    return table(header, rows)


def stream_memory_table(run: RunResult, sums: dict[str, Summary]) -> str:
    base = sums["direct"]
    header = [
        "target",
        "SSE TTFC p50 ms",
        "added TTFC ms",
        "TTFC vs direct",
        "added TTFC p99 ms",
        "proxy µs/chunk (long / paced)",
        "SSE total p50 ms",
        "streams unbuffered",
        "RSS idle MiB",
        "of it anon MiB",
        "RSS after load MiB",
        "peak RSS (VmHWM) MiB",
        "start-up s",
    ]
    rows = []
    for name, s in sums.items():
        unbuffered = all(
            stream.ttfc_ms < stream.total_ms / 2
            for r in run.targets[name].rounds
            for stream in r.streams
        )
        rows.append(
            [
                name,
                fmt(s.ttfc),
                signed(s.added_ttfc),
                ratio(s.ttfc, base.ttfc),
                signed(s.added_ttfc_p99),
                f"{fmt(s.proxy_us_chunk)} / {fmt(s.proxy_us_paced_chunk)}",
                fmt(s.stream_total),
                "yes" if unbuffered else "NO (buffered)",
                fmt(s.rss_idle_mib, 1),
                fmt(s.anon_idle_mib, 1),
                fmt(s.rss_after_mib, 1),
                fmt(s.hwm_mib, 1),
                fmt(s.startup_s, 1),
            ]
        )
    return table(header, rows)


def cpu_table(run: RunResult) -> str:
    header = [
        "target",
        "round",
        "req/s c=32",
        "CPU % c=32 client/proxy/engine/other",
        "box busy % (of 200)",
        "proxy µs/req c=32",
        "engine µs/req c=32",
        "p50 c=1 ms",
        "TTFC ms",
    ]
    rows = []
    for name, result in run.targets.items():
        for index, r in enumerate(result.rounds, 1):
            w = r.loaded_window
            proxy = "-" if name == "direct" else fmt(w.percent(w.proxy_s), 0)
            shares = "/".join([fmt(w.percent(w.client_s), 0), proxy, fmt(w.percent(w.engine_s), 0)])
            rows.append(
                [
                    name,
                    str(index),
                    fmt(r.loaded.rps),
                    f"{shares}/{fmt(w.other_percent, 0)}",
                    fmt(w.box_percent, 0),
                    "-" if name == "direct" else fmt(proxy_us_per_request_loaded(r)),
                    fmt(engine_us_per_request(r)),
                    fmt(r.latency.p50_ms),
                    fmt(r.ttfc_ms),
                ]
            )
    return table(header, rows)


@dataclass(frozen=True)
class Goal:
    name: str
    limit: float | None
    """None: a figure the issue asks to report, with no bound."""
    unit: str
    measured: float
    shown: str
    at_least: bool = False
    """The goal is a floor (measured ≥ limit), not a ceiling."""

    @property
    def met(self) -> bool:
        if self.measured != self.measured:  # NaN: not measured
            return False
        if self.limit is None:
            return True
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit

    @property
    def bound(self) -> str:
        if self.limit is None:
            return "reported"
        return f"{'≥' if self.at_least else '≤'} {fmt(self.limit, 1)} {self.unit}".rstrip()

    @property
    def verdict(self) -> str:
        if self.measured != self.measured:
            return "**not measured**"
        if self.limit is None:
            return "-"
        return "yes" if self.met else "**no**"


def goals(sums: dict[str, Summary]) -> list[Goal]:
    """The issue's targets for flm-gateway with its core (routing) addons."""
    gw = sums["flm-gateway"]
    return [
        Goal(
            "added p50 latency c=1 vs direct",
            1.5,
            "ms",
            gw.added_p50_c1,
            f"{signed(gw.added_p50_c1)} ms",
        ),
        Goal(
            "proxy CPU per request c=32", 1200, "µs", gw.proxy_us_c32, f"{fmt(gw.proxy_us_c32)} µs"
        ),
        Goal(
            "SSE time to first chunk added vs direct",
            2.0,
            "ms",
            gw.added_ttfc,
            f"{signed(gw.added_ttfc)} ms",
        ),
        Goal(
            "SSE time to first chunk added vs direct, p99",
            2.0,
            "ms",
            gw.added_ttfc_p99,
            f"{signed(gw.added_ttfc_p99)} ms",
        ),
        Goal(
            "proxy CPU per SSE chunk (long streams)",
            40,
            "µs",
            gw.proxy_us_chunk,
            f"{fmt(gw.proxy_us_chunk)} µs",
        ),
    ]


def goals_table(items: list[Goal]) -> str:
    header = ["target (flm-gateway, full pipeline)", "goal", "measured", "met"]
    return table(header, [[g.name, g.bound, g.shown, g.verdict] for g in items])
