"""The `state:` section: where keys, blocks, counters and the audit log are kept."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from flm_gateway.config.types import Duration, StrictModel

MIN_AUDIT_KEY_LENGTH = 32


class StateBackend(StrEnum):
    SQLITE = "sqlite"
    REDIS = "redis"


class AuditLogSettings(StrictModel):
    """What seals the audit log outside the state store: the MAC key and the anchor file."""

    key: SecretStr | None = Field(
        None,
        description=(
            "The secret the audit log's MACs are derived from (at least 32 characters); "
            "write ${VAR} so it lives in the environment, not in the state directory. Then "
            "someone who can write the state directory (or Redis) but cannot read the "
            "gateway's environment cannot rewrite the log undetected. Unset: key_file."
        ),
    )
    key_file: Path | None = Field(
        None,
        description=(
            "A file holding that secret (e.g. a container secret). Default: audit.key in "
            "server.state_dir, created with a random secret on first use; a file given here "
            "must exist. ~ is expanded; a relative path is relative to flm.yaml."
        ),
    )
    anchor_file: Path | None = Field(
        None,
        description=(
            "Append-only file where every writer of the audit log records the log's head "
            "(count and hash) after it appends, at most once a second; `security audit "
            "verify` detects a truncated or replaced log against it. Default: audit.anchor "
            "in server.state_dir; put it where the state directory's writers cannot reach, "
            "or make it append-only (chattr +a)."
        ),
    )

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_AUDIT_KEY_LENGTH:
            # The key itself is never echoed.
            raise ValueError(
                f"the audit key is shorter than {MIN_AUDIT_KEY_LENGTH} characters "
                "(generate one with: openssl rand -hex 32)"
            )
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> AuditLogSettings:
        if self.key is not None and self.key_file is not None:
            raise ValueError("set key or key_file, not both")
        return self


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
    audit: AuditLogSettings = Field(
        default_factory=AuditLogSettings,
        description="The audit log's MAC key and anchor file (tamper evidence outside the store).",
    )
