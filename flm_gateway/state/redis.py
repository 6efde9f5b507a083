"""The shared state store: Redis, for several gateway replicas.

Layout (every key starts with `state.redis_prefix`, default `flm:`):
`generation` (INCR on every key or block change), `keys` (hash id -> key JSON),
`secrets` (hash secret-hash -> key id, so a secret belongs to one key),
`blocks` (hash cidr -> block JSON), `counters` (hash name -> integer), `audit`
(list of record JSON, seq = position + 1) and `audit:head` ("seq hash").
Multi-step writes are optimistic transactions (WATCH/MULTI/EXEC, retried), so
the audit chain stays one chain when replicas and CLI commands append at once.
An append is durable once Redis acknowledged the EXEC: it survives a crash of
the gateway; whether it survives a crash of Redis is Redis's persistence
(`appendonly yes` with `appendfsync always`: yes; `everysec`: up to a second
lost; none: everything lost on a restart). The audit key and the anchor file
are on the gateway's host, never in Redis. Network errors, and replies that
say Redis cannot write now (out of memory, read-only replica, a key of the wrong
type), become `StateError` (the gateway then fails closed and retries). A record
Redis refuses itself (an increment that would overflow, a value the client cannot
encode) is `RecordRefused`: retrying cannot help. Records are written in their
stored form (`flm_gateway.state.stored`), which also keeps each one under the
1 MB Redis's `proto-max-bulk-len` can be set to at least: over it, Redis drops
the connection, which would look like an outage.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from flm_gateway.core.severity import Severity
from flm_gateway.state.anchor import AnchorFile
from flm_gateway.state.chain import AuditKey, link, require_kept
from flm_gateway.state.store import (
    AuditEvent,
    AuditHead,
    AuditQuery,
    AuditRecord,
    BlockRecord,
    KeyLimits,
    KeyRecord,
    KeyScopes,
    KeySecret,
    RecordRefused,
    StateError,
)
from flm_gateway.state.stored import stored_block, stored_counter

T = TypeVar("T")
TIMEOUT = 5.0
RETRIES = 50
_SCAN_BATCH = 500
_REFUSED_REPLIES = (
    "not an integer or out of range",
    "would overflow",
    "exceeds maximum allowed size",
    "too big",
)
"""Error replies about the value sent, not about the server's state."""


def _refused(exc: BaseException) -> bool:
    """Whether Redis (or redis-py's encoding) refuses this record itself."""
    if isinstance(exc, redis.DataError):  # redis-py: a value of a type it cannot send
        return True
    if isinstance(exc, redis.ResponseError):
        # Not the subclasses (out of memory, read-only, no permission): the server's state.
        # A pipeline's error quotes the command (our values) before the server's reply.
        reply = str(exc).rpartition("of pipeline caused error: ")[2]
        return type(exc) is redis.ResponseError and any(r in reply for r in _REFUSED_REPLIES)
    return isinstance(exc, ValueError | TypeError | OverflowError)  # UnicodeEncodeError...


def redacted_url(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RedisStore:
    """`StateStore` on a Redis server."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "flm:",
        audit_key: AuditKey | None = None,
        anchor: AnchorFile | None = None,
    ) -> None:
        self._prefix = prefix
        self.audit_key = audit_key
        self.anchor = anchor
        try:
            # Any: redis-py types replies as bytes | str whatever decode_responses says.
            self._redis: Any = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=TIMEOUT,
                socket_connect_timeout=TIMEOUT,
            )
            self._redis.ping()
        except (redis.RedisError, ValueError) as exc:
            raise StateError(f"redis {redacted_url(url)}: {exc}") from None

    def _k(self, name: str) -> str:
        return self._prefix + name

    def _call(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except (redis.RedisError, ValueError, TypeError, OverflowError) as exc:
            if _refused(exc):
                raise RecordRefused.of(exc) from None
            if isinstance(exc, redis.RedisError):
                raise StateError(f"redis: {exc}") from None
            raise

    def _transaction(self, watch: Sequence[str], action: Callable[[Any], T]) -> T:
        """Run `action(pipe)` under WATCH of `watch`; it reads, then calls pipe.multi()."""

        def attempt() -> T:
            for _ in range(RETRIES):
                with self._redis.pipeline() as pipe:
                    try:
                        pipe.watch(*[self._k(name) for name in watch])
                        result = action(pipe)
                        pipe.execute()
                        return result
                    except redis.WatchError:
                        continue
            raise StateError("redis: too much contention, transaction not applied")

        return self._call(attempt)

    def generation(self) -> int:
        value = self._call(lambda: self._redis.get(self._k("generation")))
        return int(value or 0)

    # -- keys -------------------------------------------------------------

    def list_keys(self) -> list[KeyRecord]:
        raw: dict[str, str] = self._call(lambda: self._redis.hgetall(self._k("keys")))
        keys = [_key_from_json(json.loads(text)) for text in raw.values()]
        return sorted(keys, key=lambda key: (key.created_at, key.id))

    def get_key(self, key_id: str) -> KeyRecord | None:
        text = self._call(lambda: self._redis.hget(self._k("keys"), key_id))
        return _key_from_json(json.loads(text)) if text else None

    def create_key(self, record: KeyRecord) -> None:
        def action(pipe: Any) -> None:
            if pipe.hexists(self._k("keys"), record.id):
                raise StateError(f"a key with id {record.id!r} exists")
            for secret in record.secrets:
                if pipe.hexists(self._k("secrets"), secret.hash):
                    raise StateError("a key with this secret exists")
            pipe.multi()
            pipe.hset(self._k("keys"), record.id, json.dumps(_key_to_json(record)))
            for secret in record.secrets:
                pipe.hset(self._k("secrets"), secret.hash, record.id)
            pipe.incr(self._k("generation"))

        self._transaction(["keys", "secrets"], action)

    def add_key_secret(self, key_id: str, secret: KeySecret, retire_others_at: float) -> bool:
        def action(pipe: Any) -> bool:
            text = pipe.hget(self._k("keys"), key_id)
            if not text:
                return False
            if pipe.hexists(self._k("secrets"), secret.hash):
                raise StateError("a key with this secret exists")
            record = _key_from_json(json.loads(text))
            retired = tuple(
                s
                if s.expires_at is not None and s.expires_at <= retire_others_at
                else KeySecret(s.hash, s.created_at, retire_others_at)
                for s in record.secrets
            )
            updated = _replace_secrets(record, (*retired, secret))
            pipe.multi()
            pipe.hset(self._k("keys"), key_id, json.dumps(_key_to_json(updated)))
            pipe.hset(self._k("secrets"), secret.hash, key_id)
            pipe.incr(self._k("generation"))
            return True

        return self._transaction(["keys", "secrets"], action)

    def revoke_key(self, key_id: str, at: float) -> bool:
        def action(pipe: Any) -> bool:
            text = pipe.hget(self._k("keys"), key_id)
            if not text:
                return False
            data = json.loads(text)
            pipe.multi()
            if data.get("revoked_at") is None:
                data["revoked_at"] = at
                pipe.hset(self._k("keys"), key_id, json.dumps(data))
                pipe.incr(self._k("generation"))
            return True

        return self._transaction(["keys"], action)

    # -- blocks -----------------------------------------------------------

    def list_blocks(self) -> list[BlockRecord]:
        raw: dict[str, str] = self._call(lambda: self._redis.hgetall(self._k("blocks")))
        blocks = [BlockRecord(**json.loads(text)) for text in raw.values()]
        return sorted(blocks, key=lambda block: (block.created_at, block.cidr))

    def put_block(self, block: BlockRecord) -> None:
        block = stored_block(block)

        def action() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._k("blocks"), block.cidr, json.dumps(block.__dict__))
            pipe.incr(self._k("generation"))
            pipe.execute()

        self._call(action)

    def remove_block(self, cidr: str) -> bool:
        def action() -> bool:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self._k("blocks"), cidr)
            pipe.incr(self._k("generation"))
            removed, _ = pipe.execute()
            return int(removed) > 0

        return self._call(action)

    def clear_blocks(self) -> int:
        def action() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hlen(self._k("blocks"))
            pipe.delete(self._k("blocks"))
            pipe.incr(self._k("generation"))
            count, _, _ = pipe.execute()
            return int(count)

        return self._call(action)

    def purge_blocks(self, expired_before: float) -> int:
        def action(pipe: Any) -> int:
            raw: dict[str, str] = pipe.hgetall(self._k("blocks"))
            stale = [
                cidr
                for cidr, text in raw.items()
                if (expires := json.loads(text).get("expires_at")) is not None
                and expires < expired_before
            ]
            pipe.multi()
            if stale:
                pipe.hdel(self._k("blocks"), *stale)
                pipe.incr(self._k("generation"))
            return len(stale)

        return self._transaction(["blocks"], action)

    # -- counters ---------------------------------------------------------

    def add_counters(self, deltas: Mapping[str, int]) -> dict[str, str]:
        if not deltas:
            return {}

        def action() -> dict[str, str]:
            pipe = self._redis.pipeline(transaction=True)
            for name, delta in deltas.items():
                pipe.hincrby(self._k("counters"), *stored_counter(name, delta))
            # EXEC runs every increment: one Redis refuses (an overflow) fails alone, so
            # the others must not be reported as failed (a retry would count them twice).
            # They all hit one hash: a failure of the server's (wrong type, out of
            # memory) fails them all, and nothing was added.
            results = pipe.execute(raise_on_error=False)
            refused: dict[str, str] = {}
            for name, result in zip(deltas, results, strict=True):
                if isinstance(result, Exception):
                    if not _refused(result):
                        raise result
                    refused[name] = type(result).__name__
            return refused

        return self._call(action)

    def get_counters(self, prefix: str) -> dict[str, int]:
        raw: dict[str, str] = self._call(lambda: self._redis.hgetall(self._k("counters")))
        return {name: int(value) for name, value in raw.items() if name.startswith(prefix)}

    # -- audit ------------------------------------------------------------

    def append_audit(
        self, events: Sequence[AuditEvent], expect: AuditHead | None = None
    ) -> list[AuditRecord]:
        if not events:
            return []

        def action(pipe: Any) -> list[AuditRecord]:
            head = _parse_head(pipe.get(self._k("audit:head")))
            if expect is not None:
                # At its index, or tampered with: no search, an append stays O(1).
                kept = self._record_at(pipe, expect.seq, search=False)
                require_kept(expect, kept.hash if kept else None, head)
            records = link(events, head, self.audit_key)
            pipe.multi()
            pipe.rpush(self._k("audit"), *[json.dumps(r.to_json()) for r in records])
            pipe.set(self._k("audit:head"), f"{records[-1].seq} {records[-1].hash}")
            return records

        records = self._transaction(["audit:head", "audit"], action)
        if self.anchor is not None:
            self.anchor.note(records[-1].head)
        return records

    def _record_at(self, client: Any, seq: int, search: bool = True) -> AuditRecord | None:
        """Record `seq`: at index seq - 1, or (`search`) wherever removals moved it."""
        if seq < 1:
            return None
        text = client.lindex(self._k("audit"), seq - 1)
        if text is not None:
            with contextlib.suppress(StateError):
                record = _audit_from_text(text)
                if record.seq == seq:
                    return record
        if not search:
            return None
        return next((r for r in self.iter_audit() if r.seq == seq), None)

    def get_audit(self, seq: int) -> AuditRecord | None:
        return self._call(lambda: self._record_at(self._redis, seq))

    def audit_head(self) -> AuditHead | None:
        return _parse_head(self._call(lambda: self._redis.get(self._k("audit:head"))))

    def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        found: list[AuditRecord] = []
        end = -1
        while len(found) < query.limit:
            start = end - _SCAN_BATCH + 1
            raw: list[str] = self._call(partial(self._redis.lrange, self._k("audit"), start, end))
            for text in reversed(raw):
                record = _audit_from_text(text)
                if query.matches(record):
                    found.append(record)
                    if len(found) >= query.limit:
                        break
            if len(raw) < _SCAN_BATCH:
                break
            end = start - 1
        found.sort(key=lambda record: record.seq)
        return found

    def iter_audit(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        index = after_seq
        while True:
            raw: list[str] = self._call(
                partial(self._redis.lrange, self._k("audit"), index, index + _SCAN_BATCH - 1)
            )
            if not raw:
                return
            for text in raw:
                yield _audit_from_text(text)
            index += len(raw)

    def close(self) -> None:
        if self.anchor is not None:
            self.anchor.flush()
        with contextlib.suppress(redis.RedisError):
            self._redis.close()


def _key_to_json(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "scopes": record.scopes.to_json(),
        "limits": record.limits.to_json(),
        "secrets": [[s.hash, s.created_at, s.expires_at] for s in record.secrets],
    }


def _key_from_json(data: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        id=data["id"],
        name=data["name"],
        created_at=data["created_at"],
        secrets=tuple(KeySecret(*item) for item in data["secrets"]),
        scopes=KeyScopes.from_json(data["scopes"]),
        limits=KeyLimits.from_json(data["limits"]),
        expires_at=data.get("expires_at"),
        revoked_at=data.get("revoked_at"),
    )


def _replace_secrets(record: KeyRecord, secrets: tuple[KeySecret, ...]) -> KeyRecord:
    data = _key_to_json(record)
    data["secrets"] = [[s.hash, s.created_at, s.expires_at] for s in secrets]
    return _key_from_json(data)


def _audit_from_text(text: str) -> AuditRecord:
    """The record stored as `text`; StateError if it is not one (edited by hand)."""
    try:
        return _audit_from_json(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StateError(f"an audit entry is not a record (edited?): {text[:80]!r}") from None


def _audit_from_json(data: Mapping[str, Any]) -> AuditRecord:
    event = AuditEvent(
        type=data["type"],
        severity=Severity(data["severity"]),
        ts=data["ts"],
        ip=data["ip"],
        key_id=data["key_id"],
        request_id=data["request_id"],
        listener=data["listener"],
        actor=data["actor"],
        details=data["details"],
    )
    return AuditRecord(data["seq"], event, data["prev_hash"], data["hash"], data.get("mac"))


def _parse_head(text: str | None) -> AuditHead | None:
    if not text:
        return None
    seq, _, hash_ = text.partition(" ")
    return AuditHead(int(seq), hash_)
