"""StateService: the view follows other processes' writes; writes are batched; fails closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flm_gateway.security.keys import hash_secret
from flm_gateway.state import StateError, open_store
from flm_gateway.state.service import StateService
from flm_gateway.state.sqlite import SqliteStore
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
