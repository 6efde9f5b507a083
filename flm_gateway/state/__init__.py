"""Durable state: API keys, block list, counters and the audit log.

`open_store(loaded)` opens the backend `flm.yaml` names (`state.backend`):
SQLite (default; `state.db` in `server.state_dir`) or Redis, with what seals
its audit log from outside: the MAC key (`state.audit.key`/`key_file`, default
`audit.key` in the state directory) and the anchor file (`state.audit.anchor_file`,
default `audit.anchor` there). The gateway uses it through `StateService` (one
worker thread, an in-memory view, group commits of audit events); CLI commands
call the store directly. The store's protocol and its record types are in
`flm_gateway.state.store`.
"""

from __future__ import annotations

import os
from pathlib import Path

from flm_gateway.config import LoadedConfig
from flm_gateway.config.state_settings import StateBackend
from flm_gateway.state.anchor import AnchorFile
from flm_gateway.state.audit_key import load_audit_key
from flm_gateway.state.store import StateError, StateStore

__all__ = [
    "StateError",
    "StateStore",
    "anchor_path",
    "audit_key_path",
    "describe_store",
    "open_store",
    "sqlite_path",
]


def _path(loaded: LoadedConfig, configured: Path | None, default_name: str) -> Path:
    """`configured` (~ expanded, relative to flm.yaml), else `<state_dir>/<default_name>`."""
    if configured is None:
        return loaded.state_dir / default_name
    path = Path(os.path.expanduser(str(configured)))
    if not path.is_absolute():
        base = loaded.path.resolve().parent if loaded.path is not None else Path.cwd()
        path = base / path
    return path


def sqlite_path(loaded: LoadedConfig) -> Path:
    """The SQLite file of `loaded`: `state.sqlite_path`, else `<state_dir>/state.db`."""
    return _path(loaded, loaded.config.state.sqlite_path, "state.db")


def audit_key_path(loaded: LoadedConfig) -> Path:
    """The audit key file: `state.audit.key_file`, else `<state_dir>/audit.key`."""
    return _path(loaded, loaded.config.state.audit.key_file, "audit.key")


def anchor_path(loaded: LoadedConfig) -> Path:
    """The audit anchor file: `state.audit.anchor_file`, else `<state_dir>/audit.anchor`."""
    return _path(loaded, loaded.config.state.audit.anchor_file, "audit.anchor")


def describe_store(loaded: LoadedConfig) -> str:
    """Where the state lives, for messages (never includes a Redis password)."""
    settings = loaded.config.state
    if settings.backend is StateBackend.REDIS:
        from flm_gateway.state.redis import redacted_url

        return f"redis {redacted_url(settings.redis_url)} (prefix {settings.redis_prefix!r})"
    return f"sqlite {sqlite_path(loaded)}"


def open_store(loaded: LoadedConfig, writer: str | None = None) -> StateStore:
    """Open (creating if needed) the state store `loaded` names. Raises StateError.

    `writer` names this process in the anchor file (`gateway:<pid>`, `cli:<user>`).
    """
    settings = loaded.config.state
    key = load_audit_key(settings.audit, audit_key_path(loaded))
    anchor = AnchorFile(anchor_path(loaded), key, writer or f"pid:{os.getpid()}")
    if settings.backend is StateBackend.REDIS:
        from flm_gateway.state.redis import RedisStore

        return RedisStore(settings.redis_url, settings.redis_prefix, key, anchor)
    from flm_gateway.state.sqlite import SqliteStore

    return SqliteStore(sqlite_path(loaded), key, anchor)
