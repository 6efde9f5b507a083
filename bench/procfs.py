"""What the kernel says about a process and the box: CPU time, memory, load, machine facts.

Everything is read from /proc, so it costs the measured processes nothing. CPU time
comes in clock ticks (usually 10 ms); a measured window holds thousands of requests,
so a tick is a few microseconds per request.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all its threads), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after it are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def children(pid: int) -> list[int]:
    """The direct children of `pid` (e.g. nginx's workers); none once it has exited."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(child) for child in (task / "children").read_text().split())
    except (FileNotFoundError, ProcessLookupError):
        return []
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a supervisor and its workers), parents first."""
    found, index = [pid], 0
    while index < len(found):
        found.extend(children(found[index]))
        index += 1
    return found


@dataclass(frozen=True)
class Memory:
    rss_kib: int
    hwm_kib: int
    anon_kib: int
    """RssAnon: the private part of the RSS (the rest are file pages: shared libraries)."""
    pss_kib: int = 0
    """Pss: the RSS with each page shared by n processes counted 1/n (smaps_rollup), so the
    sum over a master and its forked workers is what they really take together."""

    def __add__(self, other: Memory) -> Memory:
        return Memory(
            self.rss_kib + other.rss_kib,
            self.hwm_kib + other.hwm_kib,
            self.anon_kib + other.anon_kib,
            self.pss_kib + other.pss_kib,
        )


def _fields(path: Path, keys: tuple[str, ...]) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in keys:
            values[key] = int(rest.split()[0])
    return values


def memory(pid: int, *, pss: bool = False) -> Memory:
    """VmRSS, VmHWM (peak RSS) and RssAnon of `pid`, in KiB; with `pss`, also its Pss
    (the kernel walks the page tables for it: not for sampling under load)."""
    values = _fields(Path(f"/proc/{pid}/status"), ("VmRSS", "VmHWM", "RssAnon"))
    shared = _fields(Path(f"/proc/{pid}/smaps_rollup"), ("Pss",)) if pss else {}
    return Memory(
        values.get("VmRSS", 0),
        values.get("VmHWM", 0),
        values.get("RssAnon", 0),
        shared.get("Pss", 0),
    )


def box_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from the `cpu` line of /proc/stat."""
    with open("/proc/stat") as stat:
        parts = [int(value) for value in stat.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return total - idle, total


def box_busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """CPU busy over the window, as % of one core (2 idle-free cores = 200%)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100.0 * cpu_count() * busy / total if total else 0.0


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def kernel() -> str:
    return platform.release()
