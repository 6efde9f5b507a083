"""Restore a backup: validate everything, stage it, then swap it in whole.

Policy, in this order, nothing written until step 5:
1. Decrypt (a sealed file needs the passphrase; a wrong one is refused).
2. Read the payload strictly (`archive.read_payload`: manifest, checksums, paths).
3. Validate the config with the same loader as `validate`, as if it stood at
   the target path; it decides the state directory. Unset `${VAR}`s are
   reported as warnings (the environment is not part of a backup).
4. Check every SQLite database with `PRAGMA integrity_check`, and refuse while
   a gateway is running on the target state directory (stop it first).
5. Stage the state directory and the config next to their targets, then swap:
   the current state directory is renamed to `<dir>.pre-restore-<time>` and
   the staged one renamed into place, the current config is kept as
   `<file>.pre-restore-<time>` and the staged config renamed over it. A failure
   during the swap undoes the steps already taken, so the result is the old
   state or the new one, never a mix. The previous files are kept for the
   operator to delete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flm_gateway.backup.archive import BackupContents, BackupFormatError, read_payload
from flm_gateway.backup.create import SQLITE_HEADER
from flm_gateway.backup.crypto import is_sealed, unseal
from flm_gateway.config import ConfigError, parse_config
from flm_gateway.process import running_pid


class RestoreError(Exception):
    """The backup cannot be restored; nothing was changed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class RestorePlan:
    """A validated backup and where it will go."""

    contents: BackupContents
    config_path: Path
    state_dir: Path
    warnings: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    state_dir: Path
    config_path: Path
    previous_state: Path | None
    previous_config: Path | None
    files: int


def open_backup(data: bytes, passphrase: str | None) -> BackupContents:
    """Decrypt when needed and read the payload. Raises RestoreError."""
    try:
        if is_sealed(data):
            if not passphrase:
                raise RestoreError(
                    ["the backup is encrypted; give its passphrase with --passphrase-env VAR"]
                )
            data = unseal(data, passphrase)
        return read_payload(data)
    except BackupFormatError as exc:
        raise RestoreError([str(exc)]) from None
    except RestoreError:
        raise
    except Exception as exc:  # BackupCryptoError and friends: same message shape
        raise RestoreError([str(exc)]) from None


def _check_database(name: str, data: bytes) -> str | None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "check.db"
        path.write_bytes(data)
        try:
            connection = sqlite3.connect(path)
            try:
                result = connection.execute("PRAGMA integrity_check").fetchone()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            return f"state/{name}: not a usable SQLite database: {exc}"
    if result is None or result[0] != "ok":
        return f"state/{name}: SQLite integrity check failed: {result}"
    return None


def plan_restore(contents: BackupContents, config_path: Path) -> RestorePlan:
    """Validate `contents` for restoring to `config_path`. Raises RestoreError."""
    if contents.config is None:
        raise RestoreError(["the backup has no config file; it cannot be restored on its own"])
    problems: list[str] = []
    warnings: list[str] = []
    base = config_path.resolve().parent
    try:
        _, state_dir = parse_config(contents.config, file="<backup>/flm.yaml", base_dir=base)
    except ConfigError as exc:
        for problem in exc.problems:
            (warnings if "environment variable" in problem.message else problems).append(
                str(problem)
            )
        if problems:
            raise RestoreError(problems) from None
        try:
            _, state_dir = parse_config(
                contents.config,
                file="<backup>/flm.yaml",
                base_dir=base,
                environ=_PlaceholderEnviron(),
            )
        except ConfigError:
            raise RestoreError(
                [*warnings, "set these variables and run the restore again"]
            ) from None
    for name, data in contents.state_files.items():
        if data.startswith(SQLITE_HEADER):
            damage = _check_database(name, data)
            if damage:
                problems.append(damage)
    pid = running_pid(state_dir)
    if pid is not None:
        problems.append(f"a gateway (pid {pid}) is running on {state_dir}; stop it first")
    if problems:
        raise RestoreError(problems)
    return RestorePlan(contents, config_path, state_dir, warnings)


class _PlaceholderEnviron(dict[str, str]):
    """Every variable set (to a harmless value), to find the state dir despite unset ones."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return "unset"


def _stage_state(plan: RestorePlan) -> Path:
    parent = plan.state_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{plan.state_dir.name}.restore-", dir=parent))
    os.chmod(staged, 0o700)
    for name, data in plan.contents.state_files.items():
        target = staged / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(target, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return staged


def _stage_config(plan: RestorePlan) -> Path:
    assert plan.contents.config is not None
    parent = plan.config_path.resolve().parent
    fd, name = tempfile.mkstemp(prefix=f".{plan.config_path.name}.restore-", dir=parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(plan.contents.config)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(name, 0o600)
    return Path(name)


def apply_restore(plan: RestorePlan) -> RestoreResult:
    """Stage and swap in a validated plan; all or nothing (see the module docstring)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    undo: list[Callable[[], None]] = []
    staged_state = _stage_state(plan)
    try:
        staged_config = _stage_config(plan)
    except BaseException:
        shutil.rmtree(staged_state, ignore_errors=True)
        raise
    previous_state: Path | None = None
    previous_config: Path | None = None
    try:
        if plan.state_dir.exists():
            previous_state = plan.state_dir.with_name(f"{plan.state_dir.name}.pre-restore-{stamp}")
            os.rename(plan.state_dir, previous_state)
            kept_state = previous_state
            undo.append(lambda: os.rename(kept_state, plan.state_dir))
        os.rename(staged_state, plan.state_dir)
        undo.append(lambda: os.rename(plan.state_dir, staged_state))
        if plan.config_path.exists():
            previous_config = plan.config_path.with_name(
                f"{plan.config_path.name}.pre-restore-{stamp}"
            )
            shutil.copy2(plan.config_path, previous_config)
        os.replace(staged_config, plan.config_path)
    except BaseException:
        for step in reversed(undo):
            with contextlib.suppress(OSError):
                step()
        shutil.rmtree(staged_state, ignore_errors=True)
        with contextlib.suppress(OSError):
            staged_config.unlink()
        if previous_config is not None:
            with contextlib.suppress(OSError):
                previous_config.unlink()
        raise
    return RestoreResult(
        plan.state_dir,
        plan.config_path,
        previous_state,
        previous_config,
        len(plan.contents.state_files),
    )
