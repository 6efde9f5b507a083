"""audit: a flow's security events reach the keyed log with their context, durably, before the
answer; the flood limit summarises what it suppresses; a failed commit fails closed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http

import flm_gateway.state.state_service as service_module
from flm_gateway.addons.audit import MAX_PER_CLIENT, MAX_TRACKED, Audit
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.flow_meta import AUDIT_WRITTEN, AUTH_KEY_ID
from flm_gateway.security.events import record
from flm_gateway.state.sqlite import SqliteStore
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import AuditQuery, AuditRecord, StateError, StateStore
from flm_gateway.state.verify import verify
from tests.support.flows import configure
from tests.support.security import flow, loaded, opened_service


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def stored(config_dir: Path) -> list[AuditRecord]:
    """What another process reads from the database now (no flush by the service)."""
    other = SqliteStore(config_dir / "state.db")
    try:
        return list(other.iter_audit())
    finally:
        other.close()


async def finish(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


async def test_events_are_durable_before_the_answer_with_their_context(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        audit = Audit(service)
        target = flow(config, ip="192.0.2.3", headers={"authorization": "Bearer flm-secret"})
        AUTH_KEY_ID.set(target, "key_x")
        record(target, "intrusion.detected", Severity.HIGH, None, rule="SQL-001")
        target.response = http.Response.make(403)
        pending = audit.response(target)
        assert pending is not None  # the hook waits for the commit
        await pending
        records = stored(config.state_dir)  # durable: in the file, nothing left to flush
        assert [r.event.type for r in records] == ["intrusion.detected"]
        assert service.pending == 0
        event = records[0].event
        assert (event.ip, event.key_id, event.request_id, event.listener) == (
            "192.0.2.3",
            "key_x",
            "req-1",
            "main",
        )
        assert event.details == {"rule": "SQL-001", "status": 403}
        assert target.response.status_code == 403
        assert "flm-secret" not in repr([r.to_json() for r in records])
        assert audit.error(target) is None  # written once
        assert verify(records, service.call_sync(lambda s: s.audit_key)).ok


async def test_flows_without_events_do_not_wait(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        audit = Audit(service)
        target = flow(config)
        target.response = http.Response.make(200)
        assert audit.response(target) is None
        assert audit.error(target) is None
        target.response.stream = True
        assert audit.responseheaders(target) is None


async def test_config_loads_are_audited_in_the_background(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        configure(config, Audit(service))
        service.flush_sync()
        (event,) = [r.event for r in stored(config.state_dir)]
        assert event.type == "config.loaded" and event.details["file"] == config.display_name


async def test_a_streamed_answer_waits_on_responseheaders_later_events_on_response(
    tmp_path: Path,
) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        audit = Audit(service)
        target = flow(config, method="POST", path="/v1/chat/completions")
        record(target, "intrusion.detected", Severity.LOW, None, rule="SCN-002")
        target.response = http.Response.make(200)
        assert audit.responseheaders(target) is None  # buffered: waits on response instead
        target.response.stream = True
        await finish(audit.responseheaders(target))
        assert [r.event.type for r in stored(config.state_dir)] == ["intrusion.detected"]
        assert AUDIT_WRITTEN.require(target) == 1
        assert audit.response(target) is None  # nothing new
        record(target, "anomaly.rate_spike", Severity.MEDIUM, None)
        await finish(audit.response(target))
        assert [r.event.type for r in stored(config.state_dir)] == [
            "intrusion.detected",
            "anomaly.rate_spike",
        ]


async def test_concurrent_flows_share_one_group_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        batches: list[int] = []
        append = SqliteStore.append_audit

        def counting(store: SqliteStore, events: Any, expect: Any = None) -> list[AuditRecord]:
            batches.append(len(events))
            return append(store, events, expect)

        monkeypatch.setattr(SqliteStore, "append_audit", counting)
        audit = Audit(service)
        pending = []
        for n in range(20):
            target = flow(config, ip=f"192.0.2.{n + 1}")
            record(target, "auth.failed", Severity.LOW, None)
            target.response = http.Response.make(401)
            pending.append(audit.response(target))
        await asyncio.gather(*[p for p in pending if p is not None])
        # The first commit starts at once; the 19 that arrive meanwhile share the next.
        assert sum(batches) == 20 and len(batches) <= 2, batches
        assert len(stored(config.state_dir)) == 20


class FailingAppend:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, store: StateStore, events: Any, expect: Any = None) -> list[AuditRecord]:
        self.calls += 1
        raise StateError("disk full")


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_failed_commit_answers_503_and_keeps_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        audit = Audit(service)
        target = flow(config)
        record(target, "auth.failed", Severity.LOW, None, reason="unknown")
        target.response = http.Response.make(401, b"{}")
        target.response.stream = streamed
        failing = FailingAppend()
        original = SqliteStore.append_audit
        monkeypatch.setattr(SqliteStore, "append_audit", failing)
        hook = audit.responseheaders if streamed else audit.response
        await finish(hook(target))
        assert failing.calls == 1
        if streamed:
            assert target.error is not None  # killed before a byte was sent
        else:
            assert target.response.status_code == 503
            body = json.loads(target.response.content or b"")
            assert body["error"]["code"] == "security_state_unavailable"
            assert target.response.headers["retry-after"] == "5"
        assert service.pending == 1  # queued for the retry
        monkeypatch.setattr(SqliteStore, "append_audit", original)
        await service.flush()
        assert [r.event.type for r in stored(config.state_dir)] == ["auth.failed"]


async def test_a_commit_that_hangs_times_out_into_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "COMMIT_TIMEOUT", 0.05)
    append = SqliteStore.append_audit

    def slow(store: SqliteStore, events: Any, expect: Any = None) -> list[AuditRecord]:
        time.sleep(0.3)  # a store stuck for longer than the commit may take
        return append(store, events, expect)

    monkeypatch.setattr(SqliteStore, "append_audit", slow)
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        audit = Audit(service)
        target = flow(config)
        record(target, "auth.failed", Severity.LOW, None)
        target.response = http.Response.make(401)
        await finish(audit.response(target))
        assert target.response.status_code == 503
        await asyncio.sleep(0.4)  # the slow commit still lands
        assert [r.event.type for r in stored(config.state_dir)] == ["auth.failed"]


async def test_flood_limit_summarises_at_the_next_event_and_never_waits(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    clock = Clock()
    with opened_service(config) as service:
        audit = Audit(service, clock)
        waited = 0
        for _ in range(MAX_PER_CLIENT + 25):
            target = flow(config, ip="198.51.100.1")
            record(target, "auth.failed", Severity.LOW, None)
            pending = audit.response(target)
            waited += pending is not None
            await finish(pending)
        assert waited == MAX_PER_CLIENT  # the suppressed 25 did not wait
        clock.now += 61
        target = flow(config, ip="198.51.100.1")
        record(target, "auth.failed", Severity.LOW, None)
        await finish(audit.response(target))
        service.flush_sync()
        records = service.call_sync(lambda store: store.query_audit(AuditQuery(limit=1000)))
        types = [r.event.type for r in records]
        assert types.count("auth.failed") == MAX_PER_CLIENT + 1
        summary = next(r for r in records if r.event.type == "audit.suppressed")
        assert summary.event.details == {"type": "auth.failed", "suppressed": 25, "since": 5000.0}


def flood(audit: Audit, ip: str, over: int) -> None:
    for _ in range(MAX_PER_CLIENT + over):
        audit.admit(ip, "auth.failed", audit._clock())


def summaries(service: StateService) -> list[dict[str, Any]]:
    service.flush_sync()
    records = service.call_sync(lambda store: store.query_audit(AuditQuery(limit=10_000)))
    return [
        {"ip": r.event.ip, **r.event.details} for r in records if r.event.type == "audit.suppressed"
    ]


async def test_the_sweep_summarises_ended_minutes_of_clients_that_went_quiet(
    tmp_path: Path,
) -> None:
    config = loaded("", tmp_path)
    clock = Clock()
    with opened_service(config) as service:
        audit = Audit(service, clock)
        flood(audit, "198.51.100.1", 3)
        flood(audit, "198.51.100.2", 0)  # at the limit: nothing suppressed
        clock.now += 30
        assert audit.sweep() == 0  # the minute is not over
        clock.now += 31
        assert audit.sweep() == 1
        assert audit.sweep() == 0  # once
        assert summaries(service) == [
            {"ip": "198.51.100.1", "type": "auth.failed", "suppressed": 3, "since": 5000.0}
        ]


async def test_stop_and_eviction_summarise_what_was_counted(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    clock = Clock()
    with opened_service(config) as service:
        audit = Audit(service, clock)
        flood(audit, "198.51.100.7", 2)
        for n in range(MAX_TRACKED):  # pushes the flooding client out of tracking
            audit.admit(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", "auth.failed", clock.now)
        flood(audit, "198.51.100.8", 4)
        await service.stop()  # calls summarise_all before its last flush
    reopened = SqliteStore(config.state_dir / "state.db")
    found = {
        (r.event.ip, r.event.details["suppressed"])
        for r in reopened.iter_audit()
        if r.event.type == "audit.suppressed"
    }
    reopened.close()
    assert found == {("198.51.100.7", 2), ("198.51.100.8", 4)}
