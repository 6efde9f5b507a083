"""The benchmark's quick mode, run for real: fake engine, nginx, flm-gateway, wrk, SSE client.

Nothing is mocked; the windows are one second, so the numbers only prove that every
part ran and produced a figure, not how fast anything is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
NUMBER = re.compile(r"^[+-]?[\d,]+(\.\d+)?$")
GOALS = (
    "added p50 latency c=1 vs direct",
    "proxy CPU per request c=32",
    "SSE time to first chunk added vs direct",
    "SSE time to first chunk added vs direct, p99",
    "proxy CPU per SSE chunk (long streams)",
    "RSS idle per worker",
)
FIELD_SCENARIOS = "gomodel,onthebench,memory,soak,startup,workers"

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None or shutil.which("nginx") is None,
    reason="the benchmark needs wrk and nginx (scripts/test.sh installs both)",
)


def table_rows(report: str, heading: str) -> dict[str, list[str]]:
    """The rows of the Markdown table under `heading`, keyed by their first cell."""
    section = report.split(heading, 1)[1].split("\n#", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and not line.startswith("|---") and len(cells) > 1:
            rows[cells[0]] = cells[1:]
    return rows


def run_bench(out: Path, *args: str, limit: int) -> str:
    """`python -m bench --quick ARGS`; its Markdown report."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--time-limit",
            str(limit),
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=limit + 20,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(90)
def test_quick_run_reports_every_target_and_goal(tmp_path: Path) -> None:
    report = run_bench(tmp_path, "--scenario", "standard", limit=60)

    requests = table_rows(report, "#### Non-streaming chat completions")
    streams = table_rows(report, "#### Paced SSE stream and memory")
    for target in ("direct", "nginx", "flm-gateway"):
        req_per_s, _, p50, p99 = requests[target][:4]
        for cell in (req_per_s, p50, p99):
            assert NUMBER.match(cell), (target, requests[target])
        assert float(req_per_s.replace(",", "")) > 0
        assert requests[target][-1] == "0", f"{target} had errors: {requests[target]}"
        assert NUMBER.match(streams[target][0]), (target, streams[target])
        assert streams[target][6] == "yes", f"{target} buffered the SSE stream"
    for proxy in ("nginx", "flm-gateway"):
        cpu_per_request = requests[proxy][8]
        assert NUMBER.match(cpu_per_request), requests[proxy]
        assert NUMBER.match(streams[proxy][7]), streams[proxy]  # RSS idle
        long, paced = streams[proxy][4].split(" / ")  # proxy CPU µs per SSE chunk
        assert NUMBER.match(long) and NUMBER.match(paced), streams[proxy]

    goals = table_rows(report, "#### Targets")
    assert set(GOALS) <= set(goals)
    for goal in GOALS:
        _limit, measured, met = goals[goal]
        assert re.search(r"\d", measured), (goal, measured)
        assert met in ("yes", "**no**"), (goal, met)

    assert list(tmp_path.glob("*.md")) and list(tmp_path.glob("*.json"))


@pytest.mark.timeout(200)
def test_quick_field_scenarios_report_each_target_side_by_side(tmp_path: Path) -> None:
    report = run_bench(tmp_path, "--scenario", FIELD_SCENARIOS, "--workers", "1,2", limit=170)

    headings = {
        "#### GoModel's": ("req/s", "p50 ms", "p99 ms"),
        "#### onthebench's": ("added p99 c=1 ms", "added TTFT p99 ms"),
        "#### Soak": ("req/s",),
        "#### Start-up to ready": ("start-up to ready s",),
    }
    for heading, metrics in headings.items():
        rows = table_rows(report, heading)
        for metric in metrics:
            direct, nginx, gateway, *_ratios = rows[metric]
            for cell in (direct, nginx, gateway):
                assert NUMBER.match(cell), (heading, metric, rows[metric])
    streams = table_rows(report, "#### onthebench's")["concurrent SSE streams sustained"]
    assert all(cell.isdigit() for cell in streams[:3]), streams
    soak = table_rows(report, "#### Soak")
    assert NUMBER.match(soak["RSS slope MB per 10k requests"][2]), soak
    memory = table_rows(report, "#### Memory")
    assert NUMBER.match(memory["peak RSS under 32 streams MB"][2]), memory

    workers_section = report.split("#### Worker processes", 1)[1].split("\n#", 1)[0]
    workers = table_rows(report, "#### Worker processes")
    assert NUMBER.match(workers["req/s c=32, 1 worker(s)"][2]), workers
    two_ran = NUMBER.match(workers["req/s c=32, 2 worker(s)"][2])
    assert two_ran or "flm-gateway skipped: " in workers_section

    goals = table_rows(report, "#### Targets")
    for goal in ("RSS idle per worker", "RSS flat after warm-up", "start-up to ready"):
        assert goals[goal][2] in ("yes", "**no**"), (goal, goals[goal])
    assert goals["req/s vs 1 worker, 2 worker(s)"][2] in ("yes", "**no**", "**not measured**")
