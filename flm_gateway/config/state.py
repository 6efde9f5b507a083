"""The `state:` section: where keys, blocks, counters and the audit log are kept."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field

from flm_gateway.config.types import Duration, StrictModel


class StateBackend(StrEnum):
    SQLITE = "sqlite"
    REDIS = "redis"


class StateSettings(StrictModel):
    """The state store shared by the gateway and the CLI (and by replicas, with Redis)."""

    backend: StateBackend = Field(
        StateBackend.SQLITE,
        description=(
            "sqlite: an embedded database, state.db in server.state_dir (one gateway host). "
            "redis: a Redis server shared by several gateway replicas, which then share "
            "their rate limits too (one limit for all, not one per replica)."
        ),
    )
    sqlite_path: Path | None = Field(
        None,
        description=(
            "The SQLite file; default: state.db in server.state_dir. ~ is expanded; a "
            "relative path is relative to flm.yaml."
        ),
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://[user:password@]host:port/db (rediss:// for TLS). Use ${VAR}.",
    )
    redis_prefix: str = Field(
        "flm:", description="Prefix of every Redis key, so several gateways can share a server."
    )
    refresh_interval: Duration = Field(
        1.0,
        description=(
            "How often the gateway checks the store for changes made elsewhere (keys revoked "
            "or blocks added by the CLI or another replica)."
        ),
    )
    stale_after: Duration = Field(
        10.0,
        description=(
            "If the store has not answered for this long, security checks fail closed: "
            "requests get 503 until it answers again."
        ),
    )
