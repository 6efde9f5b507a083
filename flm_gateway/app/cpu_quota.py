"""`server.workers: auto`: the number of cores this process may really use.

Not `os.cpu_count()` (every core of the machine) but the smaller of:
- the CPU affinity mask (`os.sched_getaffinity`: `taskset`, `docker --cpuset-cpus`);
- the cgroup CPU quota, rounded up: cgroup v2 `cpu.max` ("200000 100000" is 2
  cores, "max 100000" none), or cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`
  (-1: none). `docker --cpus 1.5` gives 2 workers, as Go's runtime and
  nginx's `worker_processes auto` with a quota-aware libc would.
The cgroup is found from `/proc/self/cgroup`; a file that is missing or
unreadable means no limit from it. At least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def parse_cpu_max(text: str) -> float | None:
    """Cores allowed by a cgroup v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD"); None: no quota."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    try:
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """Cores allowed by cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`; None: no quota."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_cores(
    root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self")
) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2, else v1); None when unlimited."""
    v2_path, v1_path = "/", "/"
    for line in (_read(proc / "cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2_path = path or "/"
        elif "cpu" in controllers.split(","):
            v1_path = path or "/"
    # In a container the cgroup namespace makes our own group the root; outside, it is a
    # subdirectory. Try ours first, then the root.
    for base in (root / v2_path.lstrip("/"), root):
        text = _read(base / "cpu.max")
        if text is not None:
            return parse_cpu_max(text)
    for v1_root in (root / "cpu,cpuacct", root / "cpu"):
        for base in (v1_root / v1_path.lstrip("/"), v1_root):
            quota, period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                return parse_cfs(quota, period)
    return None


def usable_cores(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self")) -> int:
    """The cores this process may use: affinity mask bounded by the cgroup quota, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cores(root, proc)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def worker_count(setting: int | str) -> int:
    """`server.workers` as a number of processes ("auto": `usable_cores()`)."""
    return usable_cores() if setting == "auto" else int(setting)
