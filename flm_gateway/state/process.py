"""The running gateway's footprint in its state directory: lock, pid file, last reload result.

`gateway.lock` is held (an exclusive `flock`) by the gateway serving from the
directory, from before it opens its state until it exits, and holds its pid and
the config file it serves: a second gateway on the same state directory refuses
to start and names the first ("state directory X is in use by flm-gateway pid
N"), as nginx and postgres do with their pid/lock files. The kernel drops the
lock when the process dies, so a crash leaves no stale lock. `gateway_serving`
finds a gateway by its config file through the lock it holds open, wherever its
state directory is (`reload` after an edit of `server.state_dir`).
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
import fcntl
import json
import logging
import os
import resource
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger("flm_gateway")

PID_FILE = "gateway.pid"
LOCK_FILE = "gateway.lock"
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


def is_gateway(pid: int) -> bool:
    """Whether `pid` runs flm-gateway (by its command line)."""
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
    return pid if pid > 0 and is_gateway(pid) else None


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


class StateDirInUse(Exception):
    """Another gateway holds the state directory's lock."""


class StateDirLock:
    """The exclusive lock of one state directory (see the module docstring)."""

    def __init__(self, state_dir: Path, config_path: Path | None = None) -> None:
        self.path = state_dir / LOCK_FILE
        self._config_path = config_path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, record our pid and config file in it. Raises StateDirInUse or
        OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").partition("\n")[0].strip()
            os.close(fd)
            who = f"flm-gateway pid {holder}" if holder.isdigit() else "another flm-gateway"
            raise StateDirInUse(
                f"state directory {self.path.parent} is in use by {who}; stop it first, "
                "or give this one another server.state_dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        config = str(self._config_path.resolve()) if self._config_path else ""
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{config}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


async def serve_locked(
    state_dir: Path, config_path: Path | None, serve: Callable[[], Awaitable[int]]
) -> int:
    """`serve()` while holding `state_dir`'s lock; exit code 1, logged, when it cannot be
    taken (another gateway holds it, or the directory refuses)."""
    lock = StateDirLock(state_dir, config_path)
    try:
        lock.acquire()
    except StateDirInUse as exc:
        logger.error("%s", exc)
        return 1
    except OSError as exc:
        logger.error("cannot lock the state directory %s: %s", state_dir, exc.strerror or exc)
        return 1
    try:
        return await serve()
    finally:
        lock.release()


def lock_holder(state_dir: Path) -> int | None:
    """The pid of the gateway that holds `state_dir`'s lock (0 when it has not written it
    yet), None when none does: from its start, before it writes `gateway.pid`."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            first = os.read(fd, 32).decode(errors="replace").partition("\n")[0].strip()
            return int(first) if first.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def gateway_serving(config_path: Path) -> tuple[int, Path] | None:
    """(pid, state directory) of a running gateway that serves `config_path`, found by the
    state-directory lock it holds open (best effort: processes of other users are seen
    only by root)."""
    wanted = str(config_path.resolve())
    for process in psutil.process_iter():
        try:
            if not is_gateway(process.pid):
                continue
            locks = [f.path for f in process.open_files() if f.path.endswith("/" + LOCK_FILE)]
        except (psutil.Error, OSError):
            continue
        for lock in locks:
            try:
                lines = Path(lock).read_text().splitlines()
            except OSError:
                continue
            if len(lines) >= 2 and lines[0] == str(process.pid) and lines[1] == wanted:
                return process.pid, Path(lock).parent
    return None


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
