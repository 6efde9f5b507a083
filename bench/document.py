"""The whole run as Markdown: the rounds' tables (`bench.report`), one table per published
scenario with the gateway's ratios to direct and nginx, and the issue's targets, each
marked met or missed with the measured number."""

from __future__ import annotations

from bench.field import MB, Scenario
from bench.measure import RunResult
from bench.report import (
    Goal,
    cpu_table,
    fmt,
    goals,
    goals_table,
    ratio,
    results_table,
    stream_memory_table,
    summaries,
    table,
)

TARGETS = ("direct", "nginx", "flm-gateway")
NAN = float("nan")


def ratio_table(scenario: Scenario) -> str:
    """One row per metric: each target's value, then flm-gateway / direct and / nginx."""
    header = ["metric", *TARGETS, "flm-gateway / direct", "flm-gateway / nginx"]
    rows = []
    for metric, values in scenario.values.items():
        cells = [values.get(target, NAN) for target in TARGETS]
        gateway = values.get("flm-gateway", NAN)
        rows.append(
            [
                metric,
                *(str(cell) if isinstance(cell, int) else fmt(cell) for cell in cells),
                ratio(gateway, values.get("direct", NAN)),
                ratio(gateway, values.get("nginx", NAN)),
            ]
        )
    return table(header, rows)


def _value(run: RunResult, scenario: str, metric: str) -> float:
    for found in run.scenarios:
        if found.name == scenario:
            return found.values.get(metric, {}).get("flm-gateway", NAN)
    return NAN


def _find(run: RunResult, name: str) -> Scenario | None:
    return next((s for s in run.scenarios if s.name == name), None)


def issue_goals(run: RunResult) -> list[Goal]:
    """Issue 14's memory and start-up targets, and the workers' scaling, for flm-gateway."""
    found: list[Goal] = []
    idle = [m.rss_kib for m in run.targets["flm-gateway"].idle_each]
    if idle:
        largest = max(idle) * 1024 / MB
        shown = f"{fmt(largest, 1)} MB ({fmt(max(idle) / 1024, 1)} MiB), {len(idle)} process(es)"
        found.append(Goal("RSS idle per worker", 60, "MB", largest, shown))
    soak = _find(run, "soak")
    if soak is not None and "flm-gateway" in soak.series:
        points = soak.series["flm-gateway"]
        distance = _value(run, "soak", "RSS largest distance from start MB")
        per_10k = _value(run, "soak", "RSS slope MB per 10k requests")
        shown = (
            f"±{fmt(distance, 1)} MB over {points[-1][0]:,} requests; "
            f"slope {per_10k:+.2f} MB per 10k requests"
        )
        found.append(Goal("RSS flat after warm-up", 5, "MB", distance, shown))
    memory = _find(run, "memory")
    if memory is not None:
        metric = next((m for m in memory.values if m.startswith("peak RSS under")), "")
        peak = _value(run, "memory", metric)
        found.append(Goal(metric.removesuffix(" MB"), None, "MB", peak, f"{fmt(peak, 1)} MB"))
    workers = _find(run, "workers")
    if workers is not None:
        for metric in (m for m in workers.values if m.startswith("req/s vs 1 worker")):
            scale = _value(run, "workers", metric)
            shown = f"{fmt(scale)}x" if scale == scale else "not measured (see the notes above)"
            found.append(Goal(metric, 1.6, "x", scale, shown, at_least=True))
    startup = _value(run, "startup", "start-up to ready s")
    if startup == startup:
        found.append(Goal("start-up to ready", 1.0, "s", startup, f"{fmt(startup)} s"))
    return found


def _scenario_section(scenario: Scenario) -> list[str]:
    notes = [f"- {note}" for note in scenario.notes]
    return [
        f"#### {scenario.title}",
        "",
        ratio_table(scenario),
        "",
        *notes,
        *([""] if notes else []),
    ]


def markdown(run: RunResult) -> str:
    s = run.settings
    machine = "; ".join(f"{key} {value}" for key, value in run.machine.items())
    has_rounds = bool(run.targets["flm-gateway"].rounds)
    lines = [
        f"### Run of {run.started}",
        "",
        f"- machine: {machine}",
        f"- box load average (1/5/15 min): {run.load_before} before, {run.load_after} after;"
        " other work on the box shows in the `other` CPU column below.",
        f"- scenarios: {', '.join(['standard'] * has_rounds + [x.name for x in run.scenarios])};"
        f" the run took {fmt(run.seconds, 0)} s.",
    ]
    sums = summaries(run)
    if has_rounds:
        lines += [
            f"- standard: {s.rounds} round(s) of: warm-up {fmt(s.warmup_s, 0)} s, "
            f"c={s.connections} for {fmt(s.load_s, 0)} s, c=1 for {fmt(s.latency_s, 0)} s, "
            f"{s.streams} paced SSE streams ({s.chunks} chunks, "
            f"{fmt(s.chunk_delay * 1000, 0)} ms apart) at c=1; cells are medians over the rounds.",
            "",
            "#### Non-streaming chat completions (wrk, keep-alive)",
            "",
            results_table(run, sums),
            "",
            "#### Paced SSE stream and memory",
            "",
            stream_memory_table(run, sums),
        ]
    lines.append("")
    for scenario in run.scenarios:
        lines += _scenario_section(scenario)
    targets = (goals(sums) if has_rounds else []) + issue_goals(run)
    lines += ["#### Targets", "", goals_table(targets), ""]
    if has_rounds:
        lines += [
            "#### Each round (CPU % of one core over the c=32 window)",
            "",
            cpu_table(run),
            "",
        ]
    return "\n".join(lines)
