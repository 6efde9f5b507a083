"""AuditWatch: the gateway's own expectations of the log, at open and at every append."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flm_gateway.state.anchor import AnchorFile
from flm_gateway.state.audit_watch import TAMPERED, AuditWatch
from flm_gateway.state.chain import AuditKey, link
from flm_gateway.state.sqlite import SqliteStore
from flm_gateway.state.store import AuditEvent

KEY = AuditKey.derive("w" * 32)


def keyed_store(tmp_path: Path) -> SqliteStore:
    anchor = AnchorFile(tmp_path / "audit.anchor", KEY, "test", interval=0.0)
    return SqliteStore(tmp_path / "state.db", KEY, anchor)


def test_at_open_the_newest_anchor_must_still_be_held(tmp_path: Path) -> None:
    store = keyed_store(tmp_path)
    records = store.append_audit([AuditEvent("a"), AuditEvent("b"), AuditEvent("c")])
    assert AuditWatch.check_open(store) == (records[-1].head, None)
    store._db.execute("DELETE FROM audit WHERE seq = 3")
    head, problem = AuditWatch.check_open(store)
    assert head == records[1].head
    assert problem is not None and problem.startswith("audit.anchor (last line) (test, ")
    assert problem.endswith(
        "record 3 (hash " + records[2].hash[:16] + "...) is gone: the log now ends at record 2"
    )
    (tmp_path / "audit.anchor").write_text('{"seq": 2, "hash": "x", "ts": 1, "by": "me"}\n')
    _, problem = AuditWatch.check_open(store)
    assert (
        problem
        == "audit.anchor (last line) has no MAC: it was not written by a keyed writer (forged)"
    )
    (tmp_path / "audit.anchor").unlink()
    assert AuditWatch.check_open(store) == (records[1].head, None)  # nothing to compare with
    store.close()


def test_an_append_after_a_cut_records_the_finding_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = keyed_store(tmp_path)
    watch = AuditWatch()
    watch.appended(*AuditWatch.append(store, [AuditEvent("a"), AuditEvent("b")], watch.head))
    store._db.execute("DELETE FROM audit WHERE seq = 2")
    records, problem = AuditWatch.append(store, [AuditEvent("c")], watch.head)
    assert [r.event.type for r in records] == [TAMPERED, "c"]
    assert problem is not None and "record 2" in problem and "ends at record 1" in problem
    with caplog.at_level(logging.CRITICAL, "flm_gateway.audit"):
        watch.appended(records, problem)
    assert watch.head == records[-1].head and watch.status().tamper_detections == 1
    assert "audit log tampered with: since this gateway's last append" in caplog.text
    store.close()


def test_the_head_is_logged_only_when_it_moved(caplog: pytest.LogCaptureFixture) -> None:
    watch = AuditWatch()
    with caplog.at_level(logging.INFO, "flm_gateway.audit"):
        watch.log_head("at start")  # an empty log: nothing to anchor
        watch.appended(link([AuditEvent("a")], None, KEY), None)
        watch.log_head("now")
        watch.log_head("now")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("audit head now: seq=1 hash=")
    assert caplog.records[0].event == "audit.head"  # type: ignore[attr-defined]
