"""The embedded state store: one SQLite file, `state.db` in the state directory.

Safe for the gateway and CLI commands at the same time: WAL mode (readers never
block the writer), a busy timeout instead of "database is locked" errors, and
`BEGIN IMMEDIATE` around every write so the audit chain's read-last-then-append
is atomic across processes. `synchronous = FULL`: every commit fsyncs the WAL
before it returns, so an appended audit record survives a crash of the process
(kill -9) and of the machine. The directory is created 0700 and the file 0600:
it holds key hashes and the audit log. A connection belongs to the thread that
opened it; the gateway opens its store inside its one store worker thread.

Errors: a record SQLite refuses itself (a constraint, a value too big, a
parameter it cannot bind; or text UTF-8 cannot encode, an integer out of range)
is `RecordRefused`: retrying cannot help. Any other SQLite error (locked, disk
full, I/O error, a damaged file) is `StateError`: the store is failing, retry.
Records are written in their stored form (`flm_gateway.state.stored`), so the
first kind should not happen; `flm_gateway.state.refusals` handles it if it does.

Schema 2 added the audit records' `mac` column (`flm_gateway.state.chain`);
records written before it have none.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from flm_gateway.core.severity import Severity
from flm_gateway.core.sql_where import Condition, Where, any_of, one_of, starts_with
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

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    scopes TEXT NOT NULL,
    limits TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_secrets (
    hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys(id),
    created_at REAL NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS key_secrets_key ON key_secrets(key_id);
CREATE TABLE IF NOT EXISTS blocks (
    cidr TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    strikes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    ip TEXT,
    key_id TEXT,
    request_id TEXT,
    listener TEXT,
    actor TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE INDEX IF NOT EXISTS audit_ip ON audit(ip);
"""

T = TypeVar("T")

_REFUSALS = (
    sqlite3.IntegrityError,  # a constraint, a trigger's RAISE(ABORT)
    sqlite3.DataError,  # string or blob too big
    ValueError,  # UnicodeEncodeError: text UTF-8 cannot encode
    OverflowError,  # an integer out of SQLite's range
    TypeError,
)


def _refused(exc: BaseException) -> bool:
    """Whether SQLite (or the binding of its parameters) refuses this record itself."""
    if isinstance(exc, sqlite3.ProgrammingError):
        return str(exc).startswith("Error binding parameter")  # not: a closed database
    return isinstance(exc, _REFUSALS)


class SqliteStore:
    """`StateStore` on an SQLite file."""

    backend = "sqlite"

    def __init__(
        self, path: Path, audit_key: AuditKey | None = None, anchor: AnchorFile | None = None
    ) -> None:
        self.path = path
        self.audit_key = audit_key
        self.anchor = anchor
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not path.exists():
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"{path}: cannot switch the database to WAL mode ({mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._write(self._migrate)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the state database: {exc}") from None
        except OSError as exc:
            raise StateError(f"{path}: cannot create the state database: {exc.strerror}") from None

    def _migrate(self, db: sqlite3.Connection) -> None:
        # executescript() would commit mid-transaction, so statements run one by one.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        row = db.execute("SELECT v FROM meta WHERE k = 'schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT INTO meta VALUES ('generation', '0')")
        elif int(row[0]) > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} was written by a newer flm-gateway (schema {row[0]}); upgrade"
            )
        elif int(row[0]) < SCHEMA_VERSION:
            columns = {column[1] for column in db.execute("PRAGMA table_info(audit)")}
            if "mac" not in columns:
                db.execute("ALTER TABLE audit ADD COLUMN mac TEXT")
            db.execute("UPDATE meta SET v = ? WHERE k = 'schema_version'", (str(SCHEMA_VERSION),))

    # -- plumbing ---------------------------------------------------------

    def _write(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """Run `action` in one IMMEDIATE transaction (the write lock, waited for)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = action(self._db)
            except BaseException:
                if self._db.in_transaction:  # SQLite ends it itself on some errors (full)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result
        except Exception as exc:
            if _refused(exc):
                raise RecordRefused.of(exc) from None
            if isinstance(exc, sqlite3.Error):
                raise StateError(f"state database write failed: {exc}") from None
            raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"state database read failed: {exc}") from None

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A consistent read across several statements."""
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StateError(f"state database read failed: {exc}") from None
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET v = CAST(v AS INTEGER) + 1 WHERE k = 'generation'")

    def generation(self) -> int:
        rows = self._read("SELECT v FROM meta WHERE k = 'generation'")
        return int(rows[0][0]) if rows else 0

    # -- keys -------------------------------------------------------------

    def list_keys(self) -> list[KeyRecord]:
        with self._snapshot():
            keys = self._read("SELECT * FROM keys ORDER BY created_at, id")
            secrets = self._read(
                "SELECT key_id, hash, created_at, expires_at FROM key_secrets ORDER BY created_at"
            )
        by_key: dict[str, list[KeySecret]] = {}
        for key_id, hash_, created_at, expires_at in secrets:
            by_key.setdefault(key_id, []).append(KeySecret(hash_, created_at, expires_at))
        return [_key_from_row(row, by_key.get(row[0], [])) for row in keys]

    def get_key(self, key_id: str) -> KeyRecord | None:
        with self._snapshot():
            rows = self._read("SELECT * FROM keys WHERE id = ?", (key_id,))
            secrets = self._read(
                "SELECT hash, created_at, expires_at FROM key_secrets WHERE key_id = ? "
                "ORDER BY created_at",
                (key_id,),
            )
        if not rows:
            return None
        return _key_from_row(rows[0], [KeySecret(*row) for row in secrets])

    def create_key(self, record: KeyRecord) -> None:
        def action(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM keys WHERE id = ?", (record.id,)).fetchone():
                raise StateError(f"a key with id {record.id!r} exists")
            db.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.created_at,
                    record.expires_at,
                    record.revoked_at,
                    json.dumps(record.scopes.to_json()),
                    json.dumps(record.limits.to_json()),
                ),
            )
            for secret in record.secrets:
                _insert_secret(db, record.id, secret)
            self._bump(db)

        self._write(action)

    def add_key_secret(self, key_id: str, secret: KeySecret, retire_others_at: float) -> bool:
        def action(db: sqlite3.Connection) -> bool:
            if not db.execute("SELECT 1 FROM keys WHERE id = ?", (key_id,)).fetchone():
                return False
            db.execute(
                "UPDATE key_secrets SET expires_at = ? "
                "WHERE key_id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (retire_others_at, key_id, retire_others_at),
            )
            _insert_secret(db, key_id, secret)
            self._bump(db)
            return True

        return self._write(action)

    def revoke_key(self, key_id: str, at: float) -> bool:
        def action(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id)
            )
            exists = db.execute("SELECT 1 FROM keys WHERE id = ?", (key_id,)).fetchone()
            if cursor.rowcount:
                self._bump(db)
            return exists is not None

        return self._write(action)

    # -- blocks -----------------------------------------------------------

    def list_blocks(self) -> list[BlockRecord]:
        rows = self._read("SELECT * FROM blocks ORDER BY created_at, cidr")
        return [BlockRecord(*row) for row in rows]

    def put_block(self, block: BlockRecord) -> None:
        block = stored_block(block)

        def action(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    block.cidr,
                    block.reason,
                    block.source,
                    block.created_at,
                    block.expires_at,
                    block.strikes,
                ),
            )
            self._bump(db)

        self._write(action)

    def remove_block(self, cidr: str) -> bool:
        def action(db: sqlite3.Connection) -> bool:
            removed = db.execute("DELETE FROM blocks WHERE cidr = ?", (cidr,)).rowcount > 0
            if removed:
                self._bump(db)
            return removed

        return self._write(action)

    def clear_blocks(self) -> int:
        def action(db: sqlite3.Connection) -> int:
            removed = db.execute("DELETE FROM blocks").rowcount
            self._bump(db)
            return int(removed)

        return self._write(action)

    def purge_blocks(self, expired_before: float) -> int:
        def action(db: sqlite3.Connection) -> int:
            removed = db.execute(
                "DELETE FROM blocks WHERE expires_at IS NOT NULL AND expires_at < ?",
                (expired_before,),
            ).rowcount
            if removed:
                self._bump(db)
            return int(removed)

        return self._write(action)

    # -- counters ---------------------------------------------------------

    def add_counters(self, deltas: Mapping[str, int]) -> dict[str, str]:
        if not deltas:
            return {}

        def action(db: sqlite3.Connection) -> dict[str, str]:
            refused: dict[str, str] = {}
            for name, delta in deltas.items():
                # One statement each: a refused one is undone alone, the transaction goes on.
                try:
                    db.execute(
                        "INSERT INTO counters VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                        stored_counter(name, delta),
                    )
                except Exception as exc:
                    if not _refused(exc):
                        raise
                    refused[name] = type(exc).__name__
            return refused

        return self._write(action)

    def get_counters(self, prefix: str) -> dict[str, int]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._read(
            "SELECT name, value FROM counters WHERE name LIKE ? ESCAPE '\\'", (escaped + "%",)
        )
        return {name: int(value) for name, value in rows}

    # -- audit ------------------------------------------------------------

    def append_audit(
        self, events: Sequence[AuditEvent], expect: AuditHead | None = None
    ) -> list[AuditRecord]:
        if not events:
            return []

        def action(db: sqlite3.Connection) -> list[AuditRecord]:
            last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            head = _head_of(last.fetchone())
            if expect is not None:
                kept = db.execute("SELECT hash FROM audit WHERE seq = ?", (expect.seq,)).fetchone()
                require_kept(expect, kept[0] if kept else None, head)
            records = link(events, head, self.audit_key)
            db.executemany(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_audit_row(record) for record in records],
            )
            return records

        records = self._write(action)
        if self.anchor is not None:
            self.anchor.note(records[-1].head)
        return records

    def get_audit(self, seq: int) -> AuditRecord | None:
        rows = self._read("SELECT * FROM audit WHERE seq = ?", (seq,))
        return _audit_from_row(rows[0]) if rows else None

    def audit_head(self) -> AuditHead | None:
        rows = self._read("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        return _head_of(rows[0] if rows else None)

    def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        where = Where()
        where.time_range("ts", query.since, query.until)
        where.equals("ip", query.ip)
        where.equals("key_id", query.key_id)
        if query.types:
            where.add(any_of(_type_condition(type_) for type_ in query.types))
        if query.min_severity is not None:
            rank = query.min_severity.rank
            where.add(one_of("severity", [s.value for s in Severity if s.rank >= rank]))
        sql = f"SELECT * FROM audit WHERE {where.sql()} ORDER BY seq DESC LIMIT ?"  # noqa: S608 - placeholders only
        rows = self._read(sql, [*where.params, max(0, query.limit)])
        return [_audit_from_row(row) for row in reversed(rows)]

    def iter_audit(self, after_seq: int = 0) -> Iterator[AuditRecord]:
        while True:
            rows = self._read(
                "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT 1000", (after_seq,)
            )
            if not rows:
                return
            for row in rows:
                record = _audit_from_row(row)
                after_seq = record.seq
                yield record

    def close(self) -> None:
        if self.anchor is not None:
            self.anchor.flush()
        with suppress(sqlite3.Error):
            self._db.close()


def _insert_secret(db: sqlite3.Connection, key_id: str, secret: KeySecret) -> None:
    if db.execute("SELECT 1 FROM key_secrets WHERE hash = ?", (secret.hash,)).fetchone():
        raise StateError("a key with this secret exists")
    db.execute(
        "INSERT INTO key_secrets VALUES (?, ?, ?, ?)",
        (secret.hash, key_id, secret.created_at, secret.expires_at),
    )


def _key_from_row(row: Sequence[Any], secrets: list[KeySecret]) -> KeyRecord:
    key_id, name, created_at, expires_at, revoked_at, scopes, limits = row
    return KeyRecord(
        id=key_id,
        name=name,
        created_at=created_at,
        secrets=tuple(secrets),
        scopes=KeyScopes.from_json(json.loads(scopes)),
        limits=KeyLimits.from_json(json.loads(limits)),
        expires_at=expires_at,
        revoked_at=revoked_at,
    )


def _audit_row(record: AuditRecord) -> tuple[Any, ...]:
    event = record.event
    return (
        record.seq,
        float(event.ts),
        event.type,
        event.severity.value,
        event.ip,
        event.key_id,
        event.request_id,
        event.listener,
        event.actor,
        event.details_json(),
        record.prev_hash,
        record.hash,
        record.mac,
    )


def _head_of(row: Sequence[Any] | None) -> AuditHead | None:
    """The head from a `(seq, hash)` row."""
    return AuditHead(int(row[0]), str(row[1])) if row is not None else None


def _type_condition(type_: str) -> Condition:
    """An audit `types` filter entry: a prefix when it ends in `.`, else the exact type."""
    return starts_with("type", type_) if type_.endswith(".") else ("type = ?", [type_])


def _audit_from_row(row: Sequence[Any]) -> AuditRecord:
    try:
        return _parse_audit_row(row)
    except (ValueError, TypeError):
        raise StateError(f"audit record {row[0]} cannot be read (edited?)") from None


def _parse_audit_row(row: Sequence[Any]) -> AuditRecord:
    # Schema 2 appended `mac` (ALTER TABLE on older files), so `SELECT *` has it last.
    (seq, ts, type_, severity, ip, key_id, request_id, listener, actor, details, prev, digest) = (
        row[:12]
    )
    event = AuditEvent(
        type=type_,
        severity=Severity(severity),
        ts=ts,
        ip=ip,
        key_id=key_id,
        request_id=request_id,
        listener=listener,
        actor=actor,
        details=json.loads(details),
    )
    return AuditRecord(int(seq), event, prev, digest, row[12])
