"""StateService: the view follows other processes' writes; writes are batched; fails closed."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flm_gateway.security.keys import hash_secret
from flm_gateway.state import StateError, open_store
from flm_gateway.state.anchor import read_anchor_file
from flm_gateway.state.audit_watch import TAMPERED
from flm_gateway.state.sqlite import SqliteStore
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import AuditEvent, BlockRecord, KeyRecord, KeySecret
from tests.support.redis_server import redis_server
from tests.support.security import BASE, loaded


async def test_view_follows_another_process_within_a_second(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    service = StateService()
    service.open(config)
    service.refresh_interval = 0.1
    service.start()
    try:
        other = SqliteStore(config.state_dir / "state.db")  # as a CLI command would
        now = time.time()
        other.create_key(KeyRecord("key_cli", "cli", now, (KeySecret(hash_secret("s"), now),)))
        other.put_block(BlockRecord("192.0.2.0/24", "manual", "manual", now))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not service.view.by_hash:
            await asyncio.sleep(0.05)
        assert hash_secret("s") in service.view.by_hash
        assert len(service.view.blocks) == 1
        other.revoke_key("key_cli", now)
        await asyncio.sleep(0.5)
        assert service.view.by_hash[hash_secret("s")].key.revoked_at == now
        other.close()
        service.audit(AuditEvent("test.event"))
        service.count({"c": 2})
        await asyncio.sleep(0.4)  # the flusher writes in the background
        assert service.pending == 0
        assert service.usable
    finally:
        await service.stop()
    reopened = SqliteStore(config.state_dir / "state.db")
    assert [r.event.type for r in reopened.iter_audit()] == ["test.event"]
    assert reopened.get_counters("c") == {"c": 2}
    reopened.close()


async def test_own_block_survives_a_racing_refresh(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    service = StateService()
    service.open(config)
    try:
        refreshing = asyncio.create_task(service.refresh(force=True))
        service.block(BlockRecord("198.51.100.1/32", "auth", "auto", time.time(), None))
        await refreshing
        assert len(service.view.blocks) == 1
        await service.flush()
        assert await service.refresh(force=True)
        assert len(service.view.blocks) == 1
    finally:
        await service.stop()


async def test_failing_store_makes_the_service_unusable_then_recovers(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    service = StateService(max_pending=3)
    service.open(config)
    try:
        assert service.usable
        broken = True

        def flaky(store: object) -> None:
            if broken:
                raise StateError("disk on fire")

        service.submit(flaky)
        with pytest.raises(StateError):
            await service.flush()
        assert service.usable and service.pending == 1  # a blip: still within stale_after
        service.stale_after = 0.05
        await asyncio.sleep(0.1)
        assert not service.usable
        for _ in range(3):
            service.audit(AuditEvent("x"))
        broken = False
        await service.flush()
        assert service.pending == 0 and service.usable
    finally:
        await service.stop()


def test_open_failures_and_moves(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    bad = loaded("", tmp_path / "file")
    with pytest.raises(StateError):
        StateService().open(bad)
    service = StateService()
    service.open(loaded("", tmp_path / "a"))
    try:
        service.open(loaded("", tmp_path / "a"))  # same place: fine (a reload)
        with pytest.raises(StateError, match="restart"):
            service.open(loaded("", tmp_path / "b"))
    finally:
        service.close()


async def test_events_queued_before_start_are_written_soon(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    service = StateService()
    service.open(config)
    service.audit(AuditEvent("config.loaded"))
    service.start()
    try:
        deadline = time.monotonic() + 2
        while service.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert service.pending == 0
    finally:
        await service.stop()


async def test_a_log_cut_under_the_running_gateway_is_recorded_at_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = loaded("", tmp_path)
    service = StateService()
    service.open(config)
    try:
        await service.commit_audit([AuditEvent(f"e{n}") for n in range(5)])
        assert service.watch.head is not None and service.watch.head.seq == 5
        attacker = sqlite3.connect(config.state_dir / "state.db")
        attacker.execute("DELETE FROM audit WHERE seq > 2")
        attacker.commit()
        attacker.close()
        with caplog.at_level(logging.CRITICAL, "flm_gateway.audit"):
            await service.commit_audit([AuditEvent("after")])
        assert "audit log tampered with: since this gateway's last append, record 5" in caplog.text
        assert service.watch.detections == 1
        assert service.audit_status().tamper_detections == 1
        records = service.call_sync(lambda store: list(store.iter_audit()))
        assert [r.event.type for r in records] == ["e0", "e1", TAMPERED, "after"]
        assert records[2].event.severity.value == "critical"
        assert "the log now ends at record 2" in records[2].event.details["problem"]
        await service.commit_audit([AuditEvent("next")])  # the new head is the reference now
        assert service.watch.detections == 1
    finally:
        await service.stop()


async def test_a_log_cut_while_the_gateway_was_down_is_found_against_the_anchor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = loaded("", tmp_path)
    service = StateService()
    with caplog.at_level(logging.INFO, "flm_gateway.audit"):
        service.open(config)
        await service.commit_audit([AuditEvent(f"e{n}") for n in range(4)])
        await service.stop()  # flushes the anchor: head 4
    head = service.watch.head
    assert head is not None
    assert f"audit head at stop: seq=4 hash={head.hash} (verify --anchor 4:{head.hash})" in (
        caplog.text
    )
    attacker = sqlite3.connect(config.state_dir / "state.db")
    attacker.execute("DELETE FROM audit")
    attacker.commit()
    attacker.close()
    restarted = StateService()
    with caplog.at_level(logging.CRITICAL, "flm_gateway.audit"):
        restarted.open(config)
    try:
        assert "audit.anchor (last line)" in caplog.text and "the log is now empty" in caplog.text
        assert restarted.watch.detections == 1
        restarted.flush_sync()
        (tampered,) = restarted.call_sync(lambda store: list(store.iter_audit()))
        assert tampered.event.type == TAMPERED and tampered.event.details["found_by"] == "anchor"
    finally:
        restarted.close()


async def test_the_refresh_loop_writes_a_pending_anchor_within_a_refresh(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    service = StateService()
    service.open(config)
    service.refresh_interval = 0.05
    service.start()
    try:
        await service.commit_audit([AuditEvent("a")])  # anchored at once: the first line
        await service.commit_audit([AuditEvent("b")])  # within the second: pending
        path = config.state_dir / "audit.anchor"
        assert [a.seq for a in read_anchor_file(path, None).anchors] == [1]
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(path.read_text().splitlines()) < 2:
            await asyncio.sleep(0.05)
        assert [a.seq for a in read_anchor_file(path, None).anchors] == [1, 2]
    finally:
        await service.stop()


async def test_waiters_that_arrive_during_a_failed_commit_fail_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = loaded("", tmp_path)
    service = StateService()
    service.open(config)

    calls: list[int] = []

    def broken(store: object, events: object, expect: object = None) -> None:
        calls.append(1)
        time.sleep(0.1)
        raise StateError("disk on fire")

    monkeypatch.setattr(SqliteStore, "append_audit", broken)
    try:
        results = await asyncio.gather(
            service.commit_audit([AuditEvent("a")]),
            service.commit_audit([AuditEvent("b")]),
            return_exceptions=True,
        )
        assert all(isinstance(r, StateError) for r in results), results
        assert service.pending == 2  # kept for the retry
        tried = len(calls)
        with pytest.raises(StateError, match="failing writes"):
            await service.commit_audit([AuditEvent("c")])  # at once: the store is down
        assert len(calls) == tried and service.pending == 3
        monkeypatch.undo()
        await service.flush()  # the flush loop's retry succeeds
        await service.commit_audit([AuditEvent("d")])  # commits wait for the store again
    finally:
        monkeypatch.undo()
        await service.stop()
    reopened = SqliteStore(config.state_dir / "state.db")
    assert [r.event.type for r in reopened.iter_audit()] == ["a", "b", "c", "d"]
    reopened.close()


def test_a_reload_that_changes_the_audit_key_or_anchor_is_refused(tmp_path: Path) -> None:
    service = StateService()
    service.open(loaded("", tmp_path))
    try:
        service.open(loaded("", tmp_path))  # unchanged: fine
        elsewhere = f"state: {{audit: {{anchor_file: {str(tmp_path / 'x')!r}}}}}\n"
        changed = loaded("", tmp_path, base=BASE + elsewhere)
        with pytest.raises(StateError, match=r"state.audit .* changed; restart"):
            service.open(changed)
    finally:
        service.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_new_keys_are_found_by_one_shared_check(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    base = BASE
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        base += (
            f'state: {{backend: redis, redis_url: "{url}", redis_prefix: "t{tmp_path.name}:"}}\n'
        )
    config = loaded("", tmp_path, base=base)
    service = StateService()
    service.open(config)
    other = open_store(config)  # another process: the CLI, another replica
    try:
        assert await service.check_new_keys()  # nothing changed: one generation read
        service.block(BlockRecord("192.0.2.0/24", "auth", "auto", time.time(), None))
        stale = next(service._reads), service.call_sync(service._read_snapshot)
        now = time.time()
        other.create_key(KeyRecord("key_cli", "cli", now, (KeySecret(hash_secret("s"), now),)))
        assert hash_secret("s") not in service.view.by_hash
        checks = service.key_checks
        results = await asyncio.gather(*(service.check_new_keys() for _ in range(100)))
        assert all(results) and service.key_checks == checks + 1
        assert hash_secret("s") in service.view.by_hash
        assert len(service.view.blocks) == 1  # keys reloaded, our own block kept
        # a slower full refresh that read before the check must not bring the old keys back
        read, snapshot = stale
        service._apply_snapshot(snapshot, read)
        assert hash_secret("s") in service.view.by_hash
    finally:
        other.close()
        await service.stop()


async def test_a_key_check_without_a_store_answers_false(tmp_path: Path) -> None:
    service = StateService()
    assert await service.check_new_keys() is False  # never opened


async def test_flush_sync_keeps_what_a_failing_store_did_not_write(tmp_path: Path) -> None:
    """One flush path: like `flush`, `flush_sync` requeues a batch the store refused, in
    order, instead of dropping it; the next flush writes it."""
    service = StateService()
    service.open(loaded("", tmp_path))
    try:
        broken = True
        written: list[str] = []

        def flaky(store: object) -> None:
            if broken:
                raise StateError("disk on fire")
            written.append("first")

        service.submit(flaky)
        service.audit(AuditEvent("kept"))
        with pytest.raises(StateError):
            service.flush_sync()
        assert service.pending == 2
        broken = False
        service.flush_sync()
        assert written == ["first"] and service.pending == 0
    finally:
        await service.stop()
