"""One record the store cannot take never blocks the writes behind it; a store that is down
still fails closed. Against SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sqlite3
from collections.abc import AsyncIterator, Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import redis

from flm_gateway.core.severity import Severity
from flm_gateway.state import redis as redis_backend
from flm_gateway.state import sqlite as sqlite_backend
from flm_gateway.state.refusals import UNWRITABLE, is_refusal
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import (
    AuditEvent,
    AuditRecord,
    BlockRecord,
    RecordRefused,
    StateError,
    StateStore,
)
from flm_gateway.state.stored import INT64_MAX, MAX_DETAILS_CHARS
from flm_gateway.state.verify import verify
from tests.support.redis_server import RedisServer, redis_server
from tests.support.security import BASE, loaded

BACKENDS = ["sqlite", "redis"]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        # The least Redis allows: a larger value makes it drop the connection.
        redis.Redis.from_url(server.url).config_set("proto-max-bulk-len", "1mb")
        yield server.url


def _config(backend: str, tmp_path: Path, request: pytest.FixtureRequest, url: str = "") -> Any:
    base = BASE
    if backend == "redis":
        url = url or request.getfixturevalue("redis_url")
        prefix = f"t{tmp_path.name}:"
        base += f'state: {{backend: redis, redis_url: "{url}", redis_prefix: "{prefix}"}}\n'
    return loaded("", tmp_path, base=base)


@pytest.fixture(params=BACKENDS)
async def service(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateService]:
    opened = StateService()
    opened.open(_config(request.param, tmp_path, request))
    yield opened
    await opened.stop()


def _records(service: StateService) -> list[AuditRecord]:
    return service.call_sync(lambda store: list(store.iter_audit()))


def _types(service: StateService) -> list[str]:
    return [record.event.type for record in _records(service)]


def _assert_verifies(service: StateService) -> None:
    key = service.call_sync(lambda store: store.audit_key)
    report = verify(_records(service), key)
    assert report.ok, report.problems
    assert report.keyed_from == 1


def _unwritable(service: StateService) -> list[dict[str, Any]]:
    return [dict(r.event.details) for r in _records(service) if r.event.type == UNWRITABLE]


def _refusal_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flm_gateway.state" and getattr(r, "event", None) == UNWRITABLE
    ]


def _bad(type_: str) -> AuditEvent:
    """An event with no stored form at all (no such severity)."""
    return AuditEvent(type_, "bogus")  # type: ignore[arg-type]


# -- values no store could take are made writable ---------------------------------


async def test_values_no_store_could_take_are_written_and_verify(service: StateService) -> None:
    huge = "😀" * (MAX_DETAILS_CHARS * 2)  # 12 characters each in Redis's ASCII JSON
    events = [
        AuditEvent("first"),
        AuditEvent("honeypot.hit\udcff", ip="\udcff", details={"path": "/\udcff\ud800"}),
        AuditEvent("big.int", details={"n": 10**5000, "m": 2**64}),
        AuditEvent("nan.ts", ts=math.nan, details={"x": math.inf}),
        AuditEvent("objects", details={"set": {1}, "bytes": b"\xff", (1, 2): object()}),
        AuditEvent("huge", details={"body": huge}),
        AuditEvent("last"),
    ]
    await service.commit_audit(events)
    records = _records(service)
    assert [r.event.type for r in records] == [
        "first",
        "honeypot.hit\\xff",
        "big.int",
        "nan.ts",
        "objects",
        "huge",
        "last",
    ]
    assert records[1].event.details == {"path": "/\\xff\\ud800"} and records[1].event.ip == "\\xff"
    assert records[2].event.details["m"] == str(2**64)
    assert math.isfinite(records[3].event.ts) and records[3].event.details == {"x": "inf"}
    assert records[5].event.details["chars"] > MAX_DETAILS_CHARS
    assert not _unwritable(service)
    _assert_verifies(service)


# -- a record with no stored form, or one the store refuses, costs only itself -------


async def test_an_unwritable_event_is_replaced_and_the_rest_are_written(
    service: StateService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "flm_gateway.state")
    batch = [AuditEvent(f"good.{i}") for i in range(9)]
    batch.insert(6, _bad("poison"))
    await service.commit_audit(batch)  # returns: the batch did not fail
    await service.commit_audit([AuditEvent("after")])  # and later commits do not either
    types = _types(service)
    assert types == [*(f"good.{i}" for i in range(6)), UNWRITABLE, "good.6", "good.7", "good.8",
                     "after"]  # fmt: skip
    replacement = _records(service)[6].event
    assert replacement.severity is Severity.HIGH and replacement.actor == "gateway"
    assert dict(replacement.details) == {"event_type": "poison", "error": "ValueError"}
    _assert_verifies(service)
    assert len(_refusal_logs(caplog)) == 1
    assert service.pending == 0 and service.usable and not service._writes_failing


async def test_many_unwritable_events_in_one_batch(service: StateService) -> None:
    batch = [AuditEvent("a"), _bad("x"), _bad("y"), AuditEvent("b"), _bad("z")]
    await service.commit_audit(batch)
    assert _types(service) == ["a", UNWRITABLE, UNWRITABLE, "b", UNWRITABLE]
    assert [d["event_type"] for d in _unwritable(service)] == ["x", "y", "z"]
    _assert_verifies(service)


async def test_the_flush_loop_is_not_held_by_an_unwritable_event(service: StateService) -> None:
    service.flush_interval = 0.01
    service.start()
    service.audit(_bad("poison"))
    service.audit(AuditEvent("queued.after"))
    service.block(BlockRecord("192.0.2.0/24", "auth", "auto", 1.0))
    service.count({"c": 1})
    for _ in range(1000):  # the flush loop runs within milliseconds; a loaded CI may lag
        if service.pending == 0 and not service._counters:
            break
        await asyncio.sleep(0.01)
    assert _types(service) == [UNWRITABLE, "queued.after"]
    assert service.call_sync(lambda store: store.get_counters("c")) == {"c": 1}
    assert len(service.call_sync(lambda store: store.list_blocks())) == 1


def _sqlite_refuses(service: StateService, trigger: str) -> None:
    """Make the service's SQLite database refuse some records, as only SQLite can."""
    path = service.call_sync(lambda store: store.path)  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        db.execute(trigger)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_records_sqlite_refuses_cost_only_themselves(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "flm_gateway.state")
    service = StateService()
    service.open(_config(backend, tmp_path, request))
    try:
        for table, column, value in [
            ("audit", "type", "poison"),
            ("counters", "name", "poison"),
            ("blocks", "cidr", "203.0.113.0/24"),
        ]:
            _sqlite_refuses(
                service,
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                f"WHEN NEW.{column} = '{value}' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
        service.block(BlockRecord("203.0.113.0/24", "auth", "auto", 1.0))
        service.block(BlockRecord("198.51.100.0/24", "auth", "auto", 1.0))
        service.count({"poison": 3, "good": 2})
        events = [AuditEvent(f"e{i}") for i in range(20)]
        events.insert(13, AuditEvent("poison"))
        await service.commit_audit(events)
        await service.flush()  # a retry, had anything stayed queued: nothing has
        blocks = service.call_sync(lambda store: store.list_blocks())
        assert [b.cidr for b in blocks] == ["198.51.100.0/24"]
        assert ip_address("203.0.113.9") in service.view.blocks  # still blocked here
        assert service.call_sync(lambda store: store.get_counters("")) == {"good": 2}
        types = _types(service)
        assert types[:21] == [*(f"e{i}" for i in range(13)), UNWRITABLE,
                              *(f"e{i}" for i in range(13, 20))]  # fmt: skip
        assert _unwritable(service) == [
            {"event_type": "poison", "error": "IntegrityError"},
            {"write": "put_block", "error": "IntegrityError"},
            {"counter": "poison", "error": "IntegrityError"},
        ]
        _assert_verifies(service)
        assert len(_refusal_logs(caplog)) == 3  # once each, never again on a retry
        assert service.pending == 0 and not service._counters
    finally:
        await service.stop()


@pytest.mark.parametrize("backend", ["redis"])
async def test_a_counter_redis_refuses_costs_only_itself(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    service = StateService()
    service.open(_config(backend, tmp_path, request))
    try:
        other = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        other.hset(f"t{tmp_path.name}:counters", "full", INT64_MAX)
        service.count({"full": 1, "good": 5})
        await service.flush()  # Redis refuses the increment that would overflow, alone
        await service.flush()
        counters = service.call_sync(lambda store: store.get_counters(""))
        assert counters == {"full": INT64_MAX, "good": 5}  # counted once, not twice
        assert _unwritable(service) == [{"counter": "full", "error": "ResponseError"}]
        assert not service._counters and service.pending == 0
        _assert_verifies(service)
    finally:
        await service.stop()


async def test_the_store_refusing_everything_counts_as_down(
    service: StateService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If even the replacement is refused, nothing can be audited: fail closed."""

    def refuse(store: StateStore, events: Any, expect: Any = None) -> None:
        raise RecordRefused("refused", "IntegrityError")

    backend = type(service.call_sync(lambda store: store))
    monkeypatch.setattr(backend, "append_audit", refuse)
    with pytest.raises(StateError, match="refuses every record"):
        await service.commit_audit([AuditEvent("a"), AuditEvent("b")])
    assert service.pending == 2 and service._writes_failing
    monkeypatch.undo()
    await service.flush()
    assert _types(service) == ["a", "b"]


# -- a store that is down fails closed, keeps the order, and recovers ---------------


PAD = {"pad": "x" * 20000}
"""Bigger than a database page: a full disk must refuse it."""


async def _assert_fails_closed_then_recovers(service: StateService, recover: Any) -> None:
    with pytest.raises(StateError):
        await service.commit_audit([AuditEvent("during.1", details=PAD)])
    with pytest.raises(StateError, match="failing writes"):
        await service.commit_audit([AuditEvent("during.2", details=PAD)])  # at once
    service.count({"c": 1})
    service.block(BlockRecord("192.0.2.0/24", "auth", "auto", 1.0))
    with pytest.raises(StateError):
        await service.flush()  # the flush loop's retry, still down
    # queued in order, nothing replaced, nothing lost (the small block may have fitted
    # on a full disk where the events did not)
    assert service.pending in (2, 3) and len(service._audit) == 2
    recover()
    await service.flush()
    await service.commit_audit([AuditEvent("after")])
    assert _types(service) == ["before", "during.1", "during.2", "after"]
    assert not _unwritable(service)
    assert [b.cidr for b in service.call_sync(lambda store: store.list_blocks())] == [
        "192.0.2.0/24"
    ]
    # written once (it may have gone through before the events failed), never twice
    assert service.call_sync(lambda store: store.get_counters("c")) == {"c": 1}
    _assert_verifies(service)


def _on_connection(service: StateService, sql: str) -> None:
    service.call_sync(lambda store: store._db.execute(sql))  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_locked_sqlite_database_fails_closed_and_recovers(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    service = StateService()
    service.open(_config(backend, tmp_path, request))
    locker = sqlite3.connect(service.call_sync(lambda s: s.path), isolation_level=None)  # type: ignore[attr-defined]
    try:
        await service.commit_audit([AuditEvent("before")])
        _on_connection(service, "PRAGMA busy_timeout = 50")
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        await _assert_fails_closed_then_recovers(service, lambda: locker.execute("COMMIT"))
    finally:
        locker.close()
        await service.stop()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_full_sqlite_disk_fails_closed_and_recovers(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    service = StateService()
    service.open(_config(backend, tmp_path, request))
    try:
        await service.commit_audit([AuditEvent("before")])
        pages = service.call_sync(
            lambda store: store._db.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[attr-defined]
        )
        _on_connection(service, f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL from now
        await _assert_fails_closed_then_recovers(
            service, lambda: _on_connection(service, "PRAGMA max_page_count = 1073741823")
        )
    finally:
        await service.stop()


@pytest.mark.parametrize("backend", ["redis"])
async def test_a_redis_out_of_memory_fails_closed_and_recovers(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    service = StateService()
    service.open(_config(backend, tmp_path, request))
    admin = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        await service.commit_audit([AuditEvent("before")])
        admin.config_set("maxmemory", "1")  # every write refused: Redis is full
        await _assert_fails_closed_then_recovers(
            service, lambda: admin.config_set("maxmemory", "0")
        )
    finally:
        admin.config_set("maxmemory", "0")
        await service.stop()


@pytest.mark.parametrize("backend", ["redis"])
async def test_a_redis_that_stops_answering_fails_closed_and_recovers(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_backend, "TIMEOUT", 0.2)
    with redis_server(tmp_path / "redis") as server:
        service = StateService()
        service.open(_config(backend, tmp_path, request, url=server.url))
        try:
            await service.commit_audit([AuditEvent("before")])
            _signal(server, signal.SIGSTOP)  # hung: connections time out
            try:
                await _assert_fails_closed_then_recovers(
                    service, lambda: _signal(server, signal.SIGCONT)
                )
            finally:
                _signal(server, signal.SIGCONT)
        finally:
            await service.stop()


def _signal(server: RedisServer, sig: signal.Signals) -> None:
    os.kill(server.process.pid, sig)


# -- how each backend tells the two apart --------------------------------------------


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (sqlite3.OperationalError("database is locked"), False),
        (sqlite3.OperationalError("database or disk is full"), False),
        (sqlite3.OperationalError("disk I/O error"), False),
        (sqlite3.DatabaseError("database disk image is malformed"), False),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), False),
        (sqlite3.IntegrityError("NOT NULL constraint failed: audit.ts"), True),
        (sqlite3.DataError("string or blob too big"), True),
        (sqlite3.ProgrammingError("Error binding parameter 1: type 'list' is not supported"), True),
        (OverflowError("Python int too large to convert to SQLite INTEGER"), True),
        (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"), True),
    ],
)
def test_sqlite_tells_a_refused_record_from_a_failing_store(
    error: Exception, refused: bool
) -> None:
    assert sqlite_backend._refused(error) is refused


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (redis.ConnectionError("Error 111 connecting"), False),
        (redis.TimeoutError("Timeout reading from socket"), False),
        (redis.BusyLoadingError("Redis is loading the dataset in memory"), False),
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory"), False),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), False),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (
            # the quoted command (our value) says "too big"; Redis's reply does not
            redis.ResponseError(
                "Command # 1 (RPUSH k too big would overflow) of pipeline caused error: "
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            ),
            False,
        ),
        (redis.ResponseError("increment or decrement would overflow"), True),
        (redis.ResponseError("value is not an integer or out of range"), True),
        (redis.DataError("Invalid input of type: 'dict'."), True),
        (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"), True),
    ],
)
def test_redis_tells_a_refused_record_from_a_failing_store(error: Exception, refused: bool) -> None:
    assert redis_backend._refused(error) is refused


def test_the_service_retries_only_a_store_that_is_down() -> None:
    assert not is_refusal(StateError("redis: Error 111"))
    assert is_refusal(RecordRefused("refused", "IntegrityError"))
    assert is_refusal(TypeError("a bug in our own write"))
