"""The state store contract, run against every backend (SQLite here; Redis when available)."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flm_gateway.core.severity import Severity
from flm_gateway.state.anchor import AnchorFile, read_anchor_file
from flm_gateway.state.chain import GENESIS, AuditKey
from flm_gateway.state.redis import RedisStore, redacted_url
from flm_gateway.state.sqlite import SqliteStore
from flm_gateway.state.store import (
    AuditEvent,
    AuditHead,
    AuditQuery,
    AuditTampered,
    BlockRecord,
    KeyLimits,
    KeyRecord,
    KeyScopes,
    KeySecret,
    StateError,
    StateStore,
)
from flm_gateway.state.verify import verify
from tests.support.redis_server import redis_server

KEY = AuditKey.derive("k" * 32)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    opened: StateStore
    anchor = AnchorFile(tmp_path / "audit.anchor", KEY, "test", interval=0.0)
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        opened = RedisStore(url, f"t{tmp_path.name}:", KEY, anchor)
    else:
        opened = SqliteStore(tmp_path / "state" / "state.db", KEY, anchor)
    yield opened
    opened.close()


def _key(key_id: str = "key_1", hash_: str = "sha256:" + "a" * 64) -> KeyRecord:
    return KeyRecord(
        id=key_id,
        name="ci",
        created_at=100.0,
        secrets=(KeySecret(hash_, 100.0),),
        scopes=KeyScopes(models=("llama*",), listeners=("main",)),
        limits=KeyLimits(requests_per_minute=5),
        expires_at=None,
    )


def test_keys_roundtrip_rotate_and_revoke(store: StateStore) -> None:
    generation = store.generation()
    store.create_key(_key())
    assert store.generation() != generation
    (key,) = store.list_keys()
    assert key == _key()
    with pytest.raises(StateError):
        store.create_key(_key())
    with pytest.raises(StateError):
        store.create_key(_key("key_2"))  # same secret hash
    assert store.add_key_secret("key_1", KeySecret("sha256:" + "b" * 64, 200.0), 300.0)
    key = store.get_key("key_1")
    assert key is not None
    assert [(s.hash[-1], s.expires_at) for s in key.secrets] == [("a", 300.0), ("b", None)]
    assert not store.add_key_secret("nope", KeySecret("sha256:" + "c" * 64, 1.0), 1.0)
    assert store.revoke_key("key_1", 400.0)
    assert not store.revoke_key("nope", 400.0)
    key = store.get_key("key_1")
    assert key is not None and key.status(401.0) == "revoked" and key.status(399.0) == "active"


def test_blocks(store: StateStore) -> None:
    store.put_block(BlockRecord("10.0.0.0/8", "manual", "manual", 1.0, None))
    store.put_block(BlockRecord("192.0.2.1/32", "auth", "auto", 1.0, 50.0, strikes=2))
    assert [b.cidr for b in store.list_blocks()] == ["10.0.0.0/8", "192.0.2.1/32"]
    store.put_block(BlockRecord("192.0.2.1/32", "auth", "auto", 2.0, 90.0, strikes=3))
    assert store.list_blocks()[1].strikes == 3
    assert store.purge_blocks(60.0) == 0
    assert store.purge_blocks(100.0) == 1
    assert store.remove_block("10.0.0.0/8") and not store.remove_block("10.0.0.0/8")
    store.put_block(BlockRecord("::1/128", "x", "manual", 1.0))
    assert store.clear_blocks() == 1 and store.list_blocks() == []


def test_counters(store: StateStore) -> None:
    store.add_counters({"usage:k1:requests": 2, "usage:k1:tokens": 10, "other_x": 1})
    store.add_counters({"usage:k1:requests": 3})
    assert store.get_counters("usage:k1:") == {"usage:k1:requests": 5, "usage:k1:tokens": 10}
    assert store.get_counters("other_") == {"other_x": 1}
    assert store.get_counters("other%") == {}


def test_counters_and_blocks_no_store_could_take_are_stored(store: StateStore) -> None:
    """Text UTF-8 cannot encode and integers past 64 bits, in their stored form."""
    assert store.add_counters({"usage:\udcff": 2**70, "plain": 1}) == {}
    assert store.get_counters("") == {"usage:\\xff": 2**63 - 1, "plain": 1}
    store.put_block(BlockRecord("10.0.0.0/8", "reason \udcff", "auto", 1.0, strikes=2**70))
    (block,) = store.list_blocks()
    assert block.reason == "reason \\xff" and block.strikes == 2**63 - 1


def test_audit_chain_and_queries(store: StateStore) -> None:
    events = [
        AuditEvent("auth.failed", Severity.LOW, ts=10.0, ip="192.0.2.1", details={"why": "x"}),
        AuditEvent("ip.blocked", Severity.HIGH, ts=11.5, ip="192.0.2.1", details={"n": 1.5}),
        AuditEvent("anomaly.rate_spike", Severity.MEDIUM, ts=12.0, key_id="key_1"),
        AuditEvent("key.created", Severity.INFO, ts=13.0, actor="cli:me", details={"é": "ü"}),
    ]
    records = store.append_audit(events[:2]) + store.append_audit(events[2:])
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert records[0].prev_hash == GENESIS and records[1].prev_hash == records[0].hash
    assert all(KEY.check("record", r.hash, r.mac) == "ok" for r in store.iter_audit())
    assert store.audit_head() == records[-1].head == AuditHead(4, records[-1].hash)
    assert store.get_audit(2) == records[1] and store.get_audit(5) is None
    assert store.anchor is not None
    reading = read_anchor_file(store.anchor.path, KEY)
    assert reading.problems == [] and [(a.seq, a.hash) for a in reading.anchors] == [
        (2, records[1].hash),
        (4, records[3].hash),
    ]
    report = verify(store.iter_audit(), KEY, reading.anchors)
    assert report.ok and report.records == 4 and report.head == records[-1].head
    assert report.keyed_from == 1 and report.anchored_to == 4
    q = store.query_audit
    assert [r.seq for r in q(AuditQuery(types=("anomaly.",)))] == [3]
    assert [r.seq for r in q(AuditQuery(min_severity=Severity.MEDIUM))] == [2, 3]
    assert [r.seq for r in q(AuditQuery(ip="192.0.2.1", since=11.0))] == [2]
    assert [r.seq for r in q(AuditQuery(limit=2))] == [3, 4]
    assert q(AuditQuery(key_id="key_1"))[0].event.details == {}
    assert q(AuditQuery(types=("key.created",)))[0].event.details == {"é": "ü"}


def test_sqlite_tampering_is_detected(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state" / "state.db")
    store.append_audit([AuditEvent("a", details={"why": "x"}), AuditEvent("b"), AuditEvent("c")])
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    db.execute('UPDATE audit SET details = \'{"why":"y"}\' WHERE seq = 1')
    db.commit()
    report = verify(store.iter_audit())
    assert not report.ok and report.first_bad_seq == 1
    db.execute('UPDATE audit SET details = \'{"why":"x"}\' WHERE seq = 1')
    db.execute("DELETE FROM audit WHERE seq = 2")
    db.commit()
    db.close()
    report = verify(store.iter_audit())
    assert not report.ok and report.first_bad_seq == 2
    assert report.problems[0].text == "record 2: missing (deleted)"
    store.close()


def test_an_append_that_expects_a_vanished_record_appends_nothing(store: StateStore) -> None:
    first = store.append_audit([AuditEvent("a"), AuditEvent("b")])
    store.append_audit([AuditEvent("c")], expect=first[-1].head)  # still there: fine
    with pytest.raises(AuditTampered, match="record 2 was replaced"):
        store.append_audit([AuditEvent("d")], expect=AuditHead(2, "f" * 64))
    with pytest.raises(AuditTampered, match=r"record 9 .* is gone: the log now ends at record 3"):
        store.append_audit([AuditEvent("d")], expect=AuditHead(9, "f" * 64))
    assert [r.event.type for r in store.iter_audit()] == ["a", "b", "c"]


def test_sqlite_schema_1_files_gain_the_mac_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = SqliteStore(path)
    old.append_audit([AuditEvent("before")])
    old.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE audit DROP COLUMN mac")
    db.execute("UPDATE meta SET v = '1' WHERE k = 'schema_version'")
    db.commit()
    db.close()
    store = SqliteStore(path, KEY)
    store.append_audit([AuditEvent("after")])
    records = list(store.iter_audit())
    assert [r.mac is None for r in records] == [True, False]
    report = verify(records, KEY)
    assert report.ok and report.keyed_from == 2
    assert report.notes[0].startswith("record 1 predates the audit key")
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_redis_tampering_is_detected(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="tamper:")
    store.append_audit([AuditEvent("a", details={"why": "x"}), AuditEvent("b")])
    assert verify(store.iter_audit()).ok
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    first = json.loads(client.lindex("tamper:audit", 0))
    first["details"] = {"why": "y"}
    client.lset("tamper:audit", 0, json.dumps(first))
    client.close()
    report = verify(store.iter_audit())
    assert not report.ok and report.first_bad_seq == 1
    store.close()


def test_redis_errors_are_state_errors(redis_url: str) -> None:
    with pytest.raises(StateError):
        RedisStore("redis://127.0.0.1:1/0")
    assert redacted_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"


def _append_many(path: str, worker: int) -> None:
    store = SqliteStore(Path(path))
    for index in range(40):
        store.append_audit([AuditEvent("test", details={"worker": worker, "i": index})])
        if index % 10 == 0:
            store.put_block(BlockRecord(f"10.{worker}.{index}.0/24", "t", "manual", 1.0))
    store.close()


def test_concurrent_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), n)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    store = SqliteStore(path)
    report = verify(store.iter_audit())
    assert report.ok and report.records == 120
    assert len(store.list_blocks()) == 12
    store.close()


def test_files_are_private_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "s" / "state.db"
    SqliteStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_unusable_location_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError):
        SqliteStore(tmp_path / "file" / "state.db")
    (tmp_path / "garbage.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StateError):
        SqliteStore(tmp_path / "garbage.db")


def test_redis_concurrent_writers_keep_one_chain(redis_url: str) -> None:
    import threading

    def work(worker: int) -> None:
        store = RedisStore(redis_url, prefix="race:")
        for index in range(30):
            store.append_audit([AuditEvent("test", details={"w": worker, "i": index})])
        store.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    store = RedisStore(redis_url, prefix="race:")
    report = verify(store.iter_audit())
    assert report.ok and report.records == 120
    store.close()
