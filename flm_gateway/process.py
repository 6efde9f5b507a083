"""The running gateway's footprint in its state directory: pid file and last reload result.

`gateway.pid` is written when the gateway has started serving and removed when
it stops (only by the process it names). `flm-gateway reload` reads it and
sends SIGHUP, after checking that the pid still belongs to a gateway (a stale
file after a crash must not make us signal an unrelated process).
`last-reload.json` holds the outcome of the latest reload attempt, so the
command can tell its user whether the reload it asked for worked.
`raise_fd_limit` lifts the open-file limit at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import tempfile
from pathlib import Path
from typing import Any

import psutil

PID_FILE = "gateway.pid"
RELOAD_STATUS_FILE = "last-reload.json"


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` in one rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def pid_path(state_dir: Path) -> Path:
    return state_dir / PID_FILE


def _is_gateway(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        command = " ".join(process.cmdline())
    except (psutil.Error, OSError):
        return False
    return "flm_gateway" in command or "flm-gateway" in command


def running_pid(state_dir: Path) -> int | None:
    """The pid of the gateway serving from `state_dir`, if one is running."""
    try:
        pid = int(pid_path(state_dir).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and _is_gateway(pid) else None


def write_pid_file(state_dir: Path) -> int | None:
    """Record this process as the gateway of `state_dir`; the pid of a live one it replaces."""
    other = running_pid(state_dir)
    if other == os.getpid():
        other = None
    write_atomic(pid_path(state_dir), f"{os.getpid()}\n".encode(), 0o644)
    return other


def remove_pid_file(state_dir: Path) -> None:
    """Remove the pid file if it still names this process."""
    path = pid_path(state_dir)
    try:
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def write_reload_status(state_dir: Path, status: dict[str, Any]) -> None:
    write_atomic(state_dir / RELOAD_STATUS_FILE, json.dumps(status, indent=2).encode() + b"\n")


def read_reload_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / RELOAD_STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one (as nginx's worker_rlimit_nofile);
    (before, after). A client connection costs a file descriptor, an engine connection
    another: the usual soft limit of 1024 would cap the gateway at a few hundred clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target
