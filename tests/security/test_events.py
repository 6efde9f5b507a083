"""security.events: what a client sent reaches an event, and the audit log, only printable."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import http

from flm_gateway.addons.audit import Audit
from flm_gateway.core.severity import Severity
from flm_gateway.security.events import Offence, events_of, record
from flm_gateway.state.store import AuditQuery
from flm_gateway.state.verify import verify
from tests.support.security import flow, loaded, opened_service

NON_UTF8 = b"/.env/\xff\x1b[2J\xe2\x80\xae".decode("utf-8", "surrogateescape")


def test_text_details_are_printable_others_untouched() -> None:
    target = flow(loaded())
    event = record(
        target, "honeypot.hit", Severity.HIGH, Offence.HONEYPOT, path=NON_UTF8, strikes=2
    )
    assert event.details == {"path": "/.env/\\xff\\x1b[2J\\u202e", "strikes": 2}
    assert events_of(target) == [event]


async def test_a_non_utf8_path_never_blocks_the_audit_log(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        audit = Audit(service)
        for n, path in enumerate((NON_UTF8, "/after")):
            target = flow(config, ip=f"192.0.2.{n + 1}")
            record(target, "honeypot.hit", Severity.HIGH, Offence.HONEYPOT, path=path)
            target.response = http.Response.make(200)
            await audit.response(target)  # a durable commit: raised UnicodeEncodeError before
        service.flush_sync()
        records = service.call_sync(lambda store: store.query_audit(AuditQuery()))
        assert [r.event.details["path"] for r in records] == [
            "/.env/\\xff\\x1b[2J\\u202e",
            "/after",
        ]
        assert service.pending == 0
        assert verify(service.call_sync(lambda store: list(store.iter_audit()))).ok
