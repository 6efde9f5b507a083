"""The request log table, in the SQLite state database (WAL mode).

With the SQLite state backend the table sits in the state store's own file
(`state.sqlite_path`, default `state_dir/state.db`) next to the keys, blocks
and audit log; with Redis (shared by replicas, unsuited to bulky logs) each
gateway keeps its log in `state_dir/requests.db`. One row per request, written
in batches by `RequestLogWriter` from its own thread and read by
`flm-gateway logs`; WAL lets the CLI read while the gateway writes. This module
is the only one that knows the table. Times are Unix seconds (UTC); latencies
are stored in milliseconds.

Records are stored safely: every text column is cut at `MAX_TEXT` characters and
shown through `text.printable` (control characters, bidi overrides and bytes that
were not UTF-8, as a client may put in a path, become escapes such as `\\x1b`), so
whatever reads the table later (`flm-gateway logs`, the sqlite3 shell) shows no
raw control character and every row is valid UTF-8; an integer outside SQLite's
range is stored as NULL. `insert` writes a batch in one transaction; if a row is
still refused, the batch is written row by row and only the bad rows are lost.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flm_gateway.config import LoadedConfig
from flm_gateway.config.state_settings import StateBackend
from flm_gateway.core.text import printable
from flm_gateway.state import sqlite_path

if TYPE_CHECKING:  # the CLI reads the log without importing the flow machinery
    from flm_gateway.observability.flow_summary import FlowSummary

REQUESTS_DB = "requests.db"
PURGE_CHUNK = 5000
"""Rows deleted per statement while purging, so a purge never holds the lock for long."""
MAX_TEXT = 200
"""Characters of a text column kept (before escaping); the summary already cuts most."""
_SQLITE_INT = range(-(2**63), 2**63)

COLUMNS = (
    "ts",
    "request_id",
    "listener",
    "client_ip",
    "key_id",
    "method",
    "path",
    "kind",
    "model",
    "route",
    "engine",
    "status",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "tokens_estimated",
    "bytes_in",
    "bytes_out",
    "streamed",
    "error_kind",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS request_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    listener TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    key_id TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT,
    model TEXT,
    route TEXT,
    engine TEXT,
    status INTEGER,
    latency_ms REAL,
    ttft_ms REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    tokens_estimated INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    streamed INTEGER NOT NULL DEFAULT 0,
    error_kind TEXT
);
CREATE INDEX IF NOT EXISTS request_log_ts ON request_log (ts);
"""


def request_log_path(loaded: LoadedConfig) -> Path:
    """The SQLite file holding `loaded`'s request log (see the module docstring)."""
    if loaded.config.state.backend is StateBackend.SQLITE:
        return sqlite_path(loaded)
    return loaded.state_dir / REQUESTS_DB


def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """A connection to the state database in WAL mode (created when `create`)."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            # The state database holds key hashes and the audit log: owner only.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    elif not path.exists():
        raise FileNotFoundError(str(path))
    connection = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 5000")
    if create:
        connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _text(value: str | None) -> str | None:
    return None if value is None else printable(value[:MAX_TEXT])


def _integer(value: int | None) -> int | None:
    return value if value is None or value in _SQLITE_INT else None


def row_of(summary: FlowSummary) -> tuple[Any, ...]:
    """The table row of one summary, in `COLUMNS` order, safe to store (module docstring)."""
    return (
        summary.started,
        _text(summary.request_id),
        _text(summary.listener),
        _text(summary.client_ip),
        _text(summary.key_id),
        _text(summary.method),
        _text(summary.path),
        _text(summary.kind),
        _text(summary.model),
        _text(summary.route),
        _text(summary.engine),
        summary.status,
        _ms(summary.latency),
        _ms(summary.ttft),
        _integer(summary.prompt_tokens),
        _integer(summary.completion_tokens),
        int(summary.tokens_estimated),
        _integer(summary.bytes_in),
        _integer(summary.bytes_out),
        int(summary.streamed),
        _text(summary.error_kind),
    )


_INSERT = (
    f"INSERT INTO request_log ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed columns
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)


class RequestLogStore:
    """The request log table on one SQLite connection (use from one thread at a time)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.connection.row_factory = sqlite3.Row

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> RequestLogStore:
        connection = connect(path, create=create)
        if create:
            connection.executescript(SCHEMA)
        return cls(connection)

    def has_table(self) -> bool:
        row = self.connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'request_log'"
        ).fetchone()
        return row is not None

    def insert(self, summaries: Sequence[FlowSummary]) -> int:
        """Store `summaries`; the number that could not be stored (the others are).

        An error of the database itself (locked, full, no table) is raised: retrying row
        by row could not help. Any other error is a bad row, so the batch is written
        again row by row, each bad row skipped.
        """
        rows: list[tuple[Any, ...]] = []
        bad = 0
        for summary in summaries:
            try:
                rows.append(row_of(summary))
            except Exception:
                bad += 1
        try:
            self._insert(rows)
            return bad
        except sqlite3.OperationalError:
            raise
        except Exception:  # a bad row: find it below
            if len(rows) == 1:
                return bad + 1
        for row in rows:
            try:
                self._insert([row])
            except sqlite3.OperationalError:
                raise
            except Exception:
                bad += 1
        return bad

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self.connection:
            self.connection.execute("BEGIN")
            self.connection.executemany(_INSERT, rows)

    def purge(self, before: float) -> int:
        """Delete records older than `before` (Unix time); the number deleted."""
        total = 0
        while True:
            cursor = self.connection.execute(
                "DELETE FROM request_log WHERE id IN "
                "(SELECT id FROM request_log WHERE ts < ? LIMIT ?)",
                (before, PURGE_CHUNK),
            )
            total += cursor.rowcount
            if cursor.rowcount < PURGE_CHUNK:
                return total

    def select(self, where: str, params: Sequence[Any], limit: int | None) -> list[sqlite3.Row]:
        """Rows matching a WHERE clause built by `requestlog.query`, newest first."""
        sql = f"SELECT id, {', '.join(COLUMNS)} FROM request_log WHERE {where} ORDER BY ts DESC, id DESC"  # noqa: S608,E501 - clause from query.LogFilter
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return list(self.connection.execute(sql, tuple(params)))

    def close(self) -> None:
        self.connection.close()
