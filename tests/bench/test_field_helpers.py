"""The bench's pure helpers: slope and drift of the soak, percentiles, the ratio table,
the scenario list, the workers' scaling and the issue's goals. No process is started."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import procfs, scaling
from bench.__main__ import counts
from bench.document import issue_goals, ratio_table
from bench.field import Scenario, drift, percentile, slope
from bench.measure import RunResult, Settings, TargetResult
from bench.procfs import Memory
from bench.report import Goal
from bench.suite import SCENARIOS, parse_scenarios
from bench.targets import gateway_config


def test_slope_is_the_least_squares_fit() -> None:
    assert slope([(0, 90.0), (1, 91.0), (2, 92.0), (3, 93.0)]) == pytest.approx(1.0)
    assert slope([(0, 90.0), (1, 92.0), (2, 90.0), (3, 92.0)]) == pytest.approx(0.4)
    assert slope([(0, 5.0), (1, 5.0)]) == 0.0
    assert slope([(0, 5.0)]) == 0.0
    assert slope([(2, 5.0), (2, 9.0)]) == 0.0  # no spread in x


def test_drift_is_the_largest_distance_from_the_first_sample() -> None:
    assert drift([(0, 90.0), (1, 94.5), (2, 86.0)]) == pytest.approx(4.5)
    assert drift([(0, 90.0), (1, 84.0)]) == pytest.approx(6.0)
    assert drift([]) == 0.0


def test_percentile_takes_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([3.0, 1.0, 2.0], 0.99) == 3.0
    assert percentile([], 0.99) != percentile([], 0.99)  # NaN


def test_ratio_table_puts_the_gateway_next_to_direct_and_nginx() -> None:
    scenario = Scenario("gomodel", "t")
    for target, rps in (("direct", 10_000.0), ("nginx", 8_000.0), ("flm-gateway", 1_000.0)):
        scenario.put("req/s", target, rps)
        scenario.put("errors", target, 0)
    scenario.put("RSS MB", "flm-gateway", 80.0)
    lines = ratio_table(scenario).splitlines()
    assert lines[0] == (
        "| metric | direct | nginx | flm-gateway | flm-gateway / direct | flm-gateway / nginx |"
    )
    assert lines[2] == "| req/s | 10,000 | 8,000 | 1,000 | 0.10x | 0.12x |"
    assert lines[3] == "| errors | 0 | 0 | 0 | - | - |"
    assert lines[4] == "| RSS MB | - | - | 80.00 | - | - |"


def test_parse_scenarios_keeps_the_order_and_refuses_unknown_names() -> None:
    assert parse_scenarios("all") == SCENARIOS
    assert parse_scenarios("soak, gomodel") == ("soak", "gomodel")
    with pytest.raises(ValueError, match="sok"):
        parse_scenarios("gomodel,sok")


def test_worker_counts_are_positive_integers() -> None:
    assert counts("1,2,4") == (1, 2, 4)
    for bad in ("0,2", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            counts(bad)


def test_scaling_divides_each_count_by_one_worker_and_skips_missing_rows() -> None:
    scenario = Scenario("workers", "t")
    scenario.put("req/s c=32, 1 worker(s)", "nginx", 1000.0)
    scenario.put("req/s c=32, 2 worker(s)", "nginx", 1700.0)
    scenario.put("req/s c=32, 1 worker(s)", "flm-gateway", 500.0)  # 2 workers refused
    scaling.add_scaling(scenario, 32, (1, 2))
    assert scenario.values["req/s vs 1 worker, 2 worker(s)"] == {"nginx": pytest.approx(1.7)}


def test_goals_bound_and_verdict() -> None:
    nan = float("nan")
    assert Goal("a", 1.6, "x", 1.7, "", at_least=True).verdict == "yes"
    assert Goal("a", 1.6, "x", 1.5, "", at_least=True).verdict == "**no**"
    assert Goal("a", 60, "MB", 61, "").verdict == "**no**"
    assert Goal("a", 60, "MB", nan, "").verdict == "**not measured**"
    reported = Goal("a", None, "MB", 90, "")
    assert (reported.bound, reported.verdict) == ("reported", "-")


def test_issue_goals_use_the_largest_process_and_the_soak() -> None:
    run = RunResult(Settings.quick(), "now", {}, "0 0 0")
    idle = [Memory(50_000, 50_000, 30_000, 20_000), Memory(40_000, 40_000, 20_000, 15_000)]
    run.targets["flm-gateway"] = TargetResult("flm-gateway", "", 0.5, None, idle_each=idle)
    soak = Scenario("soak", "t", series={"flm-gateway": [(0, 90.0), (10_000, 97.0)]})
    soak.put("RSS largest distance from start MB", "flm-gateway", 7.0)
    soak.put("RSS slope MB per 10k requests", "flm-gateway", 7.0)
    run.scenarios.append(soak)
    found = {goal.name: goal for goal in issue_goals(run)}
    assert found["RSS idle per worker"].measured == pytest.approx(51.2)
    assert found["RSS idle per worker"].met
    flat = found["RSS flat after warm-up"]
    assert (flat.met, flat.shown) == (
        False,
        "±7.0 MB over 10,000 requests; slope +7.00 MB per 10k requests",
    )


def test_procfs_tree_holds_the_process_and_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert procfs.tree(os.getpid())[0] == os.getpid()
        assert child.pid in procfs.tree(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert procfs.tree(child.pid) == [child.pid]  # exited: no children, no error


def test_procfs_memory_reads_pss_only_when_asked() -> None:
    plain, shared = procfs.memory(os.getpid()), procfs.memory(os.getpid(), pss=True)
    assert plain.pss_kib == 0
    assert 0 < shared.pss_kib <= shared.rss_kib


def test_gateway_config_writes_each_option_only_when_given(tmp_path: Path) -> None:
    plain = yaml.safe_load(gateway_config(tmp_path, 8080, "http://127.0.0.1:9"))
    assert set(plain) == {"version", "server", "listeners", "engines", "routes"}
    assert set(plain["server"]) == {"state_dir", "log_level"}  # older revisions start too
    text = gateway_config(
        tmp_path, 8080, "http://127.0.0.1:9", 2, redis_url="redis://r", admin_port=7, client_cap=0
    )
    full = yaml.safe_load(text)
    assert full["server"]["workers"] == 2
    assert full["server"]["limits"] == {"max_connections_per_client": 0}
    assert full["state"] == {"backend": "redis", "redis_url": "redis://r"}
    assert full["admin"] == {"bind": "127.0.0.1:7"}
    assert full["listeners"][0]["bind"] == "127.0.0.1:8080"
