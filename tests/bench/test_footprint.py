"""`python -m bench.footprint`, run for real: a row per import group and start-up phase."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.footprint import GROUPS

ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(120)
def test_footprint_prints_a_row_per_group_and_phase() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.footprint"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| step")
    }
    steps = [name for name, _ in GROUPS] + ["config loaded", "idle 1 s"]
    for step in steps:
        assert float(rows[step]) > 0, (step, rows)
    assert float(rows["idle 1 s"]) > float(rows[GROUPS[0][0]])
