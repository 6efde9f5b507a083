"""Restore a backup: validate everything, stage it, then swap it in whole.

Policy, in this order, nothing written until step 5:
1. Decrypt (a sealed file needs the passphrase; a wrong one is refused).
2. Read the payload strictly (`archive.read_payload`: manifest, checksums, paths).
3. Validate the config with the same loader as `validate`, as if it stood at
   the target path; it decides the state directory. Unset `${VAR}`s are
   reported as warnings (the environment is not part of a backup).
4. Check every SQLite database with `PRAGMA integrity_check`, and refuse while
   a gateway is running on the target state directory (stop it first).
5. Stage the state directory, the config (and a state database kept outside
   the state directory, `state.sqlite_path`) next to their targets, then swap:
   the current state directory is renamed to `<dir>.pre-restore-<time>` and
   the staged one renamed into place, an external database and its journals
   likewise, the current config is kept as `<file>.pre-restore-<time>` and the
   staged config renamed over it. An audit anchor file kept outside the state
   directory (`state.audit.anchor_file`) describes the log being replaced, so
   it is moved aside too (`<file>.pre-restore-<time>`): the restored log starts
   its own anchors. A failure during the swap undoes the steps already taken,
   so the result is the old state or the new one, never a mix. The previous
   files are kept for the operator to delete (or to keep, as evidence).
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
from flm_gateway.config import ConfigError, LoadedConfig, parse_config
from flm_gateway.config.state_settings import StateBackend
from flm_gateway.state import anchor_path, sqlite_path
from flm_gateway.state.process import lock_holder, running_pid


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
    store_path: Path | None = None
    """Where the backup's external state database goes (`state.sqlite_path`)."""
    anchor_path: Path | None = None
    """An audit anchor file outside the state directory, moved aside by the restore."""


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


def _check_database(member: str, data: bytes) -> str | None:
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
            return f"{member}: not a usable SQLite database: {exc}"
    if result is None or result[0] != "ok":
        return f"{member}: SQLite integrity check failed: {result}"
    return None


def plan_restore(contents: BackupContents, config_path: Path) -> RestorePlan:
    """Validate `contents` for restoring to `config_path`. Raises RestoreError."""
    if contents.config is None:
        raise RestoreError(["the backup has no config file; it cannot be restored on its own"])
    problems: list[str] = []
    warnings: list[str] = []
    base = config_path.resolve().parent
    try:
        config, state_dir = parse_config(contents.config, file="<backup>/flm.yaml", base_dir=base)
    except ConfigError as exc:
        for problem in exc.problems:
            (warnings if "environment variable" in problem.message else problems).append(
                str(problem)
            )
        if problems:
            raise RestoreError(problems) from None
        try:
            config, state_dir = parse_config(
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
            damage = _check_database(f"state/{name}", data)
            if damage:
                problems.append(damage)
    target = LoadedConfig(config, config_path, state_dir, contents.config)
    anchor: Path | None = anchor_path(target)
    if anchor is not None and anchor.resolve().is_relative_to(state_dir.resolve()):
        anchor = None
    store_path: Path | None = None
    if contents.store is not None:
        store_path = sqlite_path(target)
        if config.state.backend is not StateBackend.SQLITE or store_path.resolve().is_relative_to(
            state_dir.resolve()
        ):
            problems.append(
                "the backup holds a state database kept outside the state directory, but its "
                "config does not say where (state.sqlite_path)"
            )
        damage = _check_database("store/state.db", contents.store)
        if damage:
            problems.append(damage)
    holder = lock_holder(state_dir)  # held from the gateway's start, before its pid file
    pid = running_pid(state_dir) if holder is None else holder
    if pid is not None:
        problems.append(f"a gateway (pid {pid}) is running on {state_dir}; stop it first")
    if problems:
        raise RestoreError(problems)
    return RestorePlan(contents, config_path, state_dir, warnings, store_path, anchor)


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


def _stage_file(target: Path, data: bytes) -> Path:
    """`data` in a private temporary file next to `target` (same file system)."""
    parent = target.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.restore-", dir=parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(name, 0o600)
    return Path(name)


def apply_restore(plan: RestorePlan) -> RestoreResult:
    """Stage and swap in a validated plan; all or nothing (see the module docstring)."""
    if plan.contents.config is None:
        raise ValueError("a restore plan without a config cannot be applied")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    staged: list[Path] = []
    undo: list[Callable[[], None]] = []
    previous_state: Path | None = None
    previous_config: Path | None = None

    def keep(path: Path) -> Path:
        """Move `path` aside as `<path>.pre-restore-<time>`; undone on failure."""
        kept = path.with_name(f"{path.name}.pre-restore-{stamp}")
        os.rename(path, kept)
        undo.append(lambda: os.rename(kept, path))
        return kept

    def put(source: Path, target: Path) -> None:
        os.replace(source, target)
        undo.append(lambda: os.rename(target, source))

    try:
        staged_state = _stage_state(plan)
        staged.append(staged_state)
        staged_config = _stage_file(plan.config_path, plan.contents.config.encode("utf-8"))
        staged.append(staged_config)
        staged_store = None
        if plan.store_path is not None and plan.contents.store is not None:
            staged_store = _stage_file(plan.store_path, plan.contents.store)
            staged.append(staged_store)
        if plan.state_dir.exists():
            previous_state = keep(plan.state_dir)
        put(staged_state, plan.state_dir)
        if staged_store is not None and plan.store_path is not None:
            for suffix in ("-wal", "-shm"):  # a stale journal must not meet the restored file
                journal = plan.store_path.with_name(plan.store_path.name + suffix)
                if journal.exists():
                    keep(journal)
            if plan.store_path.exists():
                keep(plan.store_path)
            put(staged_store, plan.store_path)
        if plan.anchor_path is not None and plan.anchor_path.exists():
            keep(plan.anchor_path)
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
        for path in staged:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        if previous_config is not None:
            with contextlib.suppress(OSError):
                previous_config.unlink()
        raise
    return RestoreResult(
        plan.state_dir,
        plan.config_path,
        previous_state,
        previous_config,
        len(plan.contents.state_files) + (plan.contents.store is not None),
    )
