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
    "RSS idle",
)

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


@pytest.mark.timeout(90)
def test_quick_run_reports_every_target_and_goal(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), "--time-limit", "60"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert done.returncode == 0, done.stderr
    report = done.stdout

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
