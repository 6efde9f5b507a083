"""Durable state: API keys, block list, counters and the audit log.

`open_store(loaded)` opens the backend `flm.yaml` names (`state.backend`):
SQLite (default; `state.db` in `server.state_dir`) or Redis. The gateway uses it
through `StateService` (one worker thread, an in-memory view, a background audit
queue); CLI commands call the store directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from flm_gateway.config import LoadedConfig
from flm_gateway.config.state import StateBackend
from flm_gateway.state.store import (
    AuditEvent,
    AuditQuery,
    AuditRecord,
    BlockRecord,
    KeyLimits,
    KeyRecord,
    KeyScopes,
    KeySecret,
    StateError,
    StateStore,
)

__all__ = [
    "AuditEvent",
    "AuditQuery",
    "AuditRecord",
    "BlockRecord",
    "KeyLimits",
    "KeyRecord",
    "KeyScopes",
    "KeySecret",
    "StateError",
    "StateStore",
    "describe_store",
    "open_store",
    "sqlite_path",
]


def sqlite_path(loaded: LoadedConfig) -> Path:
    """The SQLite file of `loaded`: `state.sqlite_path`, else `<state_dir>/state.db`."""
    configured = loaded.config.state.sqlite_path
    if configured is None:
        return loaded.state_dir / "state.db"
    path = Path(os.path.expanduser(str(configured)))
    if not path.is_absolute():
        base = loaded.path.resolve().parent if loaded.path is not None else Path.cwd()
        path = base / path
    return path


def describe_store(loaded: LoadedConfig) -> str:
    """Where the state lives, for messages (never includes a Redis password)."""
    settings = loaded.config.state
    if settings.backend is StateBackend.REDIS:
        from flm_gateway.state.redis import redacted_url

        return f"redis {redacted_url(settings.redis_url)} (prefix {settings.redis_prefix!r})"
    return f"sqlite {sqlite_path(loaded)}"


def open_store(loaded: LoadedConfig) -> StateStore:
    """Open (creating if needed) the state store `loaded` names. Raises StateError."""
    settings = loaded.config.state
    if settings.backend is StateBackend.REDIS:
        from flm_gateway.state.redis import RedisStore

        return RedisStore(settings.redis_url, settings.redis_prefix)
    from flm_gateway.state.sqlite import SqliteStore

    return SqliteStore(sqlite_path(loaded))
