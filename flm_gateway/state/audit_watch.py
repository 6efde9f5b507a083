"""The gateway's own watch on the audit log: what the store must still hold.

A running gateway is a verifier the state directory cannot roll back: it
remembers the last record it wrote or saw (`head`).
- At open (`open`, in the store thread): the log's head is read, and the
  newest line of the anchor file is checked against the store (the log must
  still hold that record with that hash).
- At every append (`append`, in the store thread): the store checks, in the
  same transaction, that it still holds `head`. If not (cut, rolled back,
  rewritten while the gateway ran), the batch is appended after an
  `audit.tamper_detected` event (critical) that says what changed.
- Each finding is logged at CRITICAL (logger `flm_gateway.audit`, event
  `audit.tamper_detected`) and counted (`status`, for the metrics). The
  gateway keeps serving: tamper evidence must not be a lever to stop it.
- `log_head` writes the head at INFO (`audit head <when>: seq=N hash=H
  (verify --anchor N:H)`, event `audit.head`) when it moved: an anchor for
  log shipping to keep out of reach.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flm_gateway.core.severity import Severity
from flm_gateway.state.anchor import last_anchor
from flm_gateway.state.chain import require_kept
from flm_gateway.state.store import (
    AuditEvent,
    AuditHead,
    AuditRecord,
    AuditStatus,
    AuditTampered,
    StateStore,
)

log = logging.getLogger("flm_gateway.audit")

TAMPERED = "audit.tamper_detected"


def tamper_event(problem: str, found_by: str) -> AuditEvent:
    """The event that records a finding (`found_by`: `anchor` at open, `append`)."""
    return AuditEvent(
        TAMPERED,
        Severity.CRITICAL,
        actor="gateway",
        details={"problem": problem, "found_by": found_by},
    )


class AuditWatch:
    """See the module docstring. `head` and the counters change only on the event loop
    (or before serving); the store-thread methods only read and return."""

    def __init__(self) -> None:
        self.head: AuditHead | None = None
        self.detections = 0
        self._logged: AuditHead | None = None

    def status(self) -> AuditStatus:
        return AuditStatus(self.head.seq if self.head else 0, self.detections)

    @staticmethod
    def check_open(store: StateStore) -> tuple[AuditHead | None, str | None]:
        """In the store thread: the log's head, and what is wrong against the newest anchor."""
        head = store.audit_head()
        if store.anchor is None:
            return head, None
        anchor = last_anchor(store.anchor.path, store.audit_key)
        if anchor is None or isinstance(anchor, str):
            return head, anchor
        kept = store.get_audit(anchor.seq) if anchor.seq > 0 else None
        try:
            require_kept(
                AuditHead(anchor.seq, anchor.hash or ""), kept.hash if kept else None, head
            )
        except AuditTampered as exc:
            return head, f"{anchor.source}: {exc}"
        return head, None

    @staticmethod
    def append(
        store: StateStore, events: Sequence[AuditEvent], expect: AuditHead | None
    ) -> tuple[list[AuditRecord], str | None]:
        """In the store thread: append `events` expecting `expect`; the records, and the
        finding when the store no longer held it (recorded before the events)."""
        try:
            return store.append_audit(events, expect), None
        except AuditTampered as exc:
            problem = f"since this gateway's last append, {exc}"
            return store.append_audit([tamper_event(problem, "append"), *events]), problem

    def appended(self, records: Sequence[AuditRecord], problem: str | None) -> None:
        """On the event loop, after an append: the new head, and the finding if any."""
        if records:
            self.head = records[-1].head
        if problem is not None:
            self.found(problem)

    def found(self, problem: str) -> None:
        self.detections += 1
        log.critical("audit log tampered with: %s", problem, extra={"event": TAMPERED})

    def log_head(self, when: str) -> None:
        head = self.head
        if head is None or head == self._logged:
            return
        self._logged = head
        log.info(
            "audit head %s: seq=%d hash=%s (verify --anchor %d:%s)",
            when,
            head.seq,
            head.hash,
            head.seq,
            head.hash,
            extra={"event": "audit.head"},
        )
