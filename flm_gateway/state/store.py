"""The state store interface: what survives a restart, behind one small protocol.

Four kinds of state, each with a handful of operations:
- **API keys** (`KeyRecord`): only hashes of secrets are stored. A key can hold
  several secrets at once (rotation with an overlap period).
- **Blocks** (`BlockRecord`): CIDRs refused by the IP filter, with expiry and a
  strike count (auto-block escalates with it). Expired rows are kept until
  `purge_blocks` so repeat offenders are remembered.
- **Counters**: named integers with an optional expiry (key usage totals).
- **Audit log** (`AuditRecord`): append-only, hash-chained and keyed
  (`flm_gateway.state.chain`), its head anchored outside the store
  (`flm_gateway.state.anchor`). Appends are durable when they return (SQLite:
  committed and fsync'd; Redis: acknowledged by the server).

The interface is synchronous: the CLI calls it directly, the gateway calls it
from one worker thread (`flm_gateway.state.state_service`), never on the event loop.
Every writer of keys or blocks bumps `generation()`, so a process can cheaply
notice another process's changes. Backends: `sqlite` (default, embedded) and
`redis` (several replicas sharing state).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from flm_gateway.core.severity import Severity

if TYPE_CHECKING:
    from flm_gateway.state.anchor import AnchorFile
    from flm_gateway.state.chain import AuditKey


class StateError(Exception):
    """The state store cannot be opened or used."""


@dataclass(frozen=True)
class AuditHead:
    """The last record of the audit log: how many records it holds, and that one's hash."""

    seq: int
    hash: str


@dataclass(frozen=True)
class AuditStatus:
    """What a gateway process knows of the audit log, for its metrics."""

    head_seq: int = 0
    tamper_detections: int = 0


class RecordRefused(StateError):
    """The store refuses this record itself (its encoding, a value out of range, its size):
    retrying cannot help, unlike a plain `StateError` (the store is down, full or locked).
    `cause` names the error the store or its client raised."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause

    @classmethod
    def of(cls, exc: BaseException) -> RecordRefused:
        cause = type(exc).__name__
        told = str(exc)  # may quote the record (Redis quotes the command): keep it short
        told = told if len(told) <= 300 else told[:299] + "…"
        return cls(f"the state store refuses the record ({cause}: {told})", cause)


class AuditTampered(StateError):
    """The audit log no longer holds a record this writer appended or saw (nothing appended)."""


@dataclass(frozen=True)
class KeyScopes:
    """What a key may reach; an empty tuple means no restriction on that axis."""

    models: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    listeners: tuple[str, ...] = ()

    def to_json(self) -> dict[str, list[str]]:
        return {
            "models": list(self.models),
            "routes": list(self.routes),
            "listeners": list(self.listeners),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyScopes:
        return cls(
            models=tuple(data.get("models") or ()),
            routes=tuple(data.get("routes") or ()),
            listeners=tuple(data.get("listeners") or ()),
        )

    @property
    def unrestricted(self) -> bool:
        return not (self.models or self.routes or self.listeners)


@dataclass(frozen=True)
class KeyLimits:
    """Per-key overrides of the per-key rate limits and the max_tokens cap."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_tokens: int | None = None

    def to_json(self) -> dict[str, int | None]:
        return {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyLimits:
        return cls(
            requests_per_minute=data.get("requests_per_minute"),
            tokens_per_minute=data.get("tokens_per_minute"),
            max_tokens=data.get("max_tokens"),
        )


@dataclass(frozen=True)
class KeySecret:
    """One accepted secret of a key, by hash. `expires_at` ends a rotated-out secret."""

    hash: str
    created_at: float
    expires_at: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class KeyRecord:
    """An API key. `id` is public (logs, audit, scopes); secrets exist only as hashes."""

    id: str
    name: str
    created_at: float
    secrets: tuple[KeySecret, ...]
    scopes: KeyScopes = field(default_factory=KeyScopes)
    limits: KeyLimits = field(default_factory=KeyLimits)
    expires_at: float | None = None
    revoked_at: float | None = None
    source: str = "store"
    """`store` (created with the CLI) or `config` (declared in flm.yaml)."""

    def status(self, now: float) -> str:
        """`active`, `revoked` or `expired`."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class BlockRecord:
    """A blocked network. `expires_at` None means until removed; `strikes` counts auto-blocks."""

    cidr: str
    reason: str
    source: str
    """`manual` (CLI), `auto` (auto-block) or `config` (flm.yaml)."""
    created_at: float
    expires_at: float | None = None
    strikes: int = 1

    def active_at(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class AuditEvent:
    """A security event or admin action, before it is chained into the log."""

    type: str
    severity: Severity = Severity.INFO
    ts: float = field(default_factory=time.time)
    ip: str | None = None
    key_id: str | None = None
    request_id: str | None = None
    listener: str | None = None
    actor: str | None = None
    """Who caused it: `gateway`, or `cli:<user>` for admin actions."""
    details: Mapping[str, Any] = field(default_factory=dict)

    def details_json(self) -> str:
        """The canonical JSON text of `details`, as stored and hashed."""
        return canonical_json(dict(self.details))


@dataclass(frozen=True)
class AuditRecord:
    """An audit event as stored: its sequence number and its link in the hash chain."""

    seq: int
    event: AuditEvent
    prev_hash: str
    hash: str
    mac: str | None = None
    """`<key fingerprint>:<HMAC>` of `hash` (`flm_gateway.state.chain`); None before keying."""

    @property
    def head(self) -> AuditHead:
        return AuditHead(self.seq, self.hash)

    def to_json(self) -> dict[str, Any]:
        event = self.event
        return {
            "seq": self.seq,
            "ts": event.ts,
            "type": event.type,
            "severity": event.severity.value,
            "ip": event.ip,
            "key_id": event.key_id,
            "request_id": event.request_id,
            "listener": event.listener,
            "actor": event.actor,
            "details": dict(event.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "mac": self.mac,
        }


@dataclass(frozen=True)
class AuditQuery:
    """Filters for `query_audit`; all optional, combined with AND. Newest last."""

    since: float | None = None
    until: float | None = None
    types: tuple[str, ...] = ()
    """Exact types, or prefixes ending in `.` (`anomaly.` matches every anomaly)."""
    min_severity: Severity | None = None
    ip: str | None = None
    key_id: str | None = None
    limit: int = 1000

    def matches(self, record: AuditRecord) -> bool:
        event = record.event
        if self.since is not None and event.ts < self.since:
            return False
        if self.until is not None and event.ts >= self.until:
            return False
        if self.types and not any(
            event.type.startswith(t) if t.endswith(".") else event.type == t for t in self.types
        ):
            return False
        if self.min_severity is not None and event.severity.rank < self.min_severity.rank:
            return False
        if self.ip is not None and event.ip != self.ip:
            return False
        return self.key_id is None or event.key_id == self.key_id


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class StateStore(Protocol):
    """The operations every backend provides. All methods may raise `StateError`."""

    backend: str
    audit_key: AuditKey | None
    """The key the audit log's MACs are made with (never stored in the store itself)."""
    anchor: AnchorFile | None
    """Where this store's writer anchors the audit log's head after each append."""

    def generation(self) -> int:
        """A number that changes whenever keys or blocks change (in any process)."""
        ...

    # keys
    def list_keys(self) -> list[KeyRecord]: ...

    def get_key(self, key_id: str) -> KeyRecord | None: ...

    def create_key(self, record: KeyRecord) -> None:
        """Store a new key with its secrets; `StateError` if the id or a hash exists."""
        ...

    def add_key_secret(self, key_id: str, secret: KeySecret, retire_others_at: float) -> bool:
        """Add a secret to a key; its other secrets stop working at `retire_others_at`."""
        ...

    def revoke_key(self, key_id: str, at: float) -> bool:
        """Mark a key revoked from `at` on; False if there is no such key."""
        ...

    # blocks
    def list_blocks(self) -> list[BlockRecord]:
        """Every block, expired ones included (their strikes count for escalation)."""
        ...

    def put_block(self, block: BlockRecord) -> None:
        """Insert or replace the block of `block.cidr` (in its stored form,
        `flm_gateway.state.stored`)."""
        ...

    def remove_block(self, cidr: str) -> bool: ...

    def clear_blocks(self) -> int:
        """Remove every block; the number removed."""
        ...

    def purge_blocks(self, expired_before: float) -> int:
        """Forget blocks that expired before `expired_before`; the number removed."""
        ...

    # counters
    def add_counters(self, deltas: Mapping[str, int]) -> dict[str, str]:
        """Add each delta to its named counter (creating it at 0), all at once.

        A counter the store refuses (`RecordRefused`: its name, an overflow) costs only
        itself: the others are added, and the refused ones returned (name -> the error's
        class). Raises StateError, with nothing added, when the store fails."""
        ...

    def get_counters(self, prefix: str) -> dict[str, int]: ...

    # audit
    def append_audit(
        self, events: Sequence[AuditEvent], expect: AuditHead | None = None
    ) -> list[AuditRecord]:
        """Chain, key and store `events` in order, atomically with respect to other writers,
        durably, then note the new head in the anchor. Each event is chained and stored in
        its stored form (`flm_gateway.state.stored`, applied by `chain.link`); raises
        `RecordRefused`, appending nothing, if the store still refuses one.

        With `expect` (a record this writer appended or saw before), raise `AuditTampered`
        and append nothing if the log no longer holds that record with that hash.
        """
        ...

    def get_audit(self, seq: int) -> AuditRecord | None:
        """Record `seq`, if the log holds it."""
        ...

    def audit_head(self) -> AuditHead | None:
        """The last record of the log (None when it is empty)."""
        ...

    def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """The newest `query.limit` matching records, oldest first."""
        ...

    def iter_audit(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        """Every record after `after_seq`, in sequence order."""
        ...

    def close(self) -> None: ...
