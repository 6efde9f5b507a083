"""`server.workers: auto`: affinity mask bounded by the cgroup quota, from sample files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flm_gateway.app.cpu_quota import (
    cgroup_cores,
    parse_cfs,
    parse_cpu_max,
    usable_cores,
    worker_count,
)


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("max 100000\n", None),
        ("200000 100000\n", 2.0),
        ("150000 100000\n", 1.5),
        ("50000 100000\n", 0.5),
        ("", None),
        ("garbage\n", None),
    ],
)
def test_cpu_max(text: str, cores: float | None) -> None:
    assert parse_cpu_max(text) == cores


@pytest.mark.parametrize(
    ("quota", "period", "cores"),
    [("-1\n", "100000\n", None), ("300000\n", "100000\n", 3.0), ("x", "100000", None)],
)
def test_cfs(quota: str, period: str, cores: float | None) -> None:
    assert parse_cfs(quota, period) == cores


def _tree(tmp_path: Path, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(cgroup)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root, proc


def test_v2_quota_of_our_own_group(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "0::/system.slice/gw.service\n",
        {"cpu.max": "max 100000\n", "system.slice/gw.service/cpu.max": "150000 100000\n"},
    )
    assert cgroup_cores(root, proc) == 1.5


def test_v2_in_a_container_reads_the_namespace_root(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": "100000 100000\n"})
    assert cgroup_cores(root, proc) == 1.0


def test_v1_quota(tmp_path: Path) -> None:
    root, proc = _tree(
        tmp_path,
        "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert cgroup_cores(root, proc) == 2.0


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, "0::/\n", {})
    assert cgroup_cores(root, proc) is None


def test_usable_cores_is_the_smaller_rounded_up(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    root, proc = _tree(tmp_path, "0::/\n", {"cpu.max": "50000 100000\n"})
    assert usable_cores(root, proc) == 1  # half a core still gets one worker
    root, proc = _tree(tmp_path / "big", "0::/\n", {"cpu.max": "6400000 100000\n"})
    assert usable_cores(root, proc) == affinity  # a quota above the mask: the mask


def test_worker_count() -> None:
    assert worker_count(3) == 3
    assert worker_count("auto") == usable_cores()
