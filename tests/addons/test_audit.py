"""audit: a flow's security events reach the hash-chained log with their context."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import http

from flm_gateway.addons.audit import MAX_PER_CLIENT, Audit
from flm_gateway.config.security import Severity
from flm_gateway.security.events import record
from flm_gateway.state.chain import verify
from flm_gateway.state.store import AuditQuery
from tests.support.security import flow, loaded, opened_service


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


async def test_events_written_with_context_and_config_loads(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        audit = Audit(service)
        audit.apply_config(config)
        target = flow(config, ip="192.0.2.3", headers={"authorization": "Bearer flm-secret"})
        target.metadata["flm.auth.key_id"] = "key_x"
        record(target, "intrusion.detected", Severity.HIGH, None, rule="SQL-001")
        target.response = http.Response.make(403)
        audit.response(target)
        audit.error(target)  # written once
        service.flush_sync()
        records = service.call_sync(lambda store: store.query_audit(AuditQuery()))
        assert [r.event.type for r in records] == ["config.loaded", "intrusion.detected"]
        event = records[1].event
        assert (event.ip, event.key_id, event.request_id, event.listener) == (
            "192.0.2.3",
            "key_x",
            "req-1",
            "main",
        )
        assert event.details == {"rule": "SQL-001", "status": 403}
        assert "flm-secret" not in repr([r.to_json() for r in records])
        assert verify(service.call_sync(lambda store: list(store.iter_audit()))).ok


async def test_flood_limit_summarises(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    clock = Clock()
    with opened_service(config) as service:
        audit = Audit(service, clock)
        for _ in range(MAX_PER_CLIENT + 25):
            target = flow(config, ip="198.51.100.1")
            record(target, "auth.failed", Severity.LOW, None)
            audit.response(target)
        clock.now += 61
        target = flow(config, ip="198.51.100.1")
        record(target, "auth.failed", Severity.LOW, None)
        audit.response(target)
        service.flush_sync()
        records = service.call_sync(lambda store: store.query_audit(AuditQuery(limit=1000)))
        types = [r.event.type for r in records]
        assert types.count("auth.failed") == MAX_PER_CLIENT + 1
        summary = next(r for r in records if r.event.type == "audit.suppressed")
        assert summary.event.details == {"type": "auth.failed", "suppressed": 25}
