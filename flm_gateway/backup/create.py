"""Collect a gateway's config and state directory into a backup payload.

The SQLite state store is part of the state directory unless
`state.sqlite_path` puts it elsewhere; then it is backed up on its own
(`store/state.db`). With the Redis backend, Redis holds keys, blocks and the
audit log and is backed up with Redis's own tools.

SQLite databases are copied with SQLite's online backup API (consistent even
while the gateway writes); the copy of the state database loses its request log
rows unless `include_request_log`, since they are bulky and not needed to run.
Skipped: the pid file and lock, the reload status, SQLite journals (`-wal`, `-shm`,
`-journal`), dot files and `*.tmp`.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from flm_gateway.backup.archive import build_payload
from flm_gateway.backup.crypto import seal
from flm_gateway.config import LoadedConfig
from flm_gateway.config.state_settings import StateBackend
from flm_gateway.state import sqlite_path
from flm_gateway.state.process import LOCK_FILE, PID_FILE, RELOAD_STATUS_FILE

SQLITE_HEADER = b"SQLite format 3\x00"
SKIPPED_NAMES = frozenset({PID_FILE, LOCK_FILE, RELOAD_STATUS_FILE})
SKIPPED_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp")


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def snapshot_sqlite(path: Path, include_request_log: bool) -> bytes:
    """A consistent copy of a live SQLite database."""
    with tempfile.TemporaryDirectory() as scratch:
        copy_path = Path(scratch) / "copy.db"
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        target = sqlite3.connect(copy_path)
        try:
            source.backup(target)
            has_log = target.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'request_log'"
            ).fetchone()
            if has_log and not include_request_log:
                target.execute("DELETE FROM request_log")
                target.commit()
            target.execute("PRAGMA journal_mode = DELETE")
            target.execute("VACUUM")
        finally:
            source.close()
            target.close()
        return copy_path.read_bytes()


def collect_state(state_dir: Path, include_request_log: bool = False) -> dict[str, bytes]:
    """Every file of the state directory that belongs in a backup, by relative path."""
    files: dict[str, bytes] = {}
    if not state_dir.is_dir():
        return files
    for path in sorted(state_dir.rglob("*")):
        relative = path.relative_to(state_dir)
        if not path.is_file() or path.is_symlink():
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.name in SKIPPED_NAMES and len(relative.parts) == 1:
            continue
        if path.name.endswith(SKIPPED_SUFFIXES):
            continue
        if _is_sqlite(path):
            files[relative.as_posix()] = snapshot_sqlite(path, include_request_log)
        else:
            files[relative.as_posix()] = path.read_bytes()
    return files


def external_store(loaded: LoadedConfig) -> Path | None:
    """The SQLite state store's file when `state.sqlite_path` puts it outside the state dir."""
    if loaded.config.state.backend is not StateBackend.SQLITE:
        return None
    path = sqlite_path(loaded)
    if path.resolve().is_relative_to(loaded.state_dir.resolve()):
        return None
    return path


def create_backup(
    loaded: LoadedConfig, passphrase: str | None, include_request_log: bool = False
) -> bytes:
    """The bytes of a backup of `loaded`'s config and state (sealed with a passphrase)."""
    config_text = loaded.source if loaded.path is not None else None
    store_path = external_store(loaded)
    store = (
        snapshot_sqlite(store_path, include_request_log)
        if store_path is not None and store_path.exists()
        else None
    )
    payload = build_payload(
        config_text, collect_state(loaded.state_dir, include_request_log), store
    )
    return seal(payload, passphrase) if passphrase else payload
