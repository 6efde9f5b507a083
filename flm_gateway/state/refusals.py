"""A record the store refuses costs only itself: it never holds the writes behind it.

`StateService` retries a failed batch whole, in order, and fails closed while it
fails: right for a store that is down (connection refused, timeout, disk full,
database locked), since the batch will go through when the store is back. Wrong
for a record the store refuses deterministically (text it cannot encode, a value
out of range, a value too large): retried forever, it would hold every later
audit event, block and counter, and the gateway would answer 503 to everyone
until restarted. So the two are told apart:
- **down**: a `StateError` (the backends raise it for every failure of the store
  itself). The batch stays queued, whole and in order.
- **refused**: a `RecordRefused` (the backends' word for "this record"), or any
  other error (writing it failed in our own code: retrying cannot help either).

Records are written in their stored form (`flm_gateway.state.stored`), so a refusal
should not happen; when one does, that record alone is dealt with, never silently:
- an **audit event**: the batch is split in halves until the refused event is
  alone, and an `audit.unwritable` event (severity high, the event's type and the
  error's class, nothing else of the event, so it can be written) takes its place
  in the chain; the events before and after it are written in order. If even that
  replacement is refused, the store refuses everything: it counts as down.
- a **counter**: the others are added (the backends refuse counters one by one);
  the refused delta is dropped and an `audit.unwritable` event records its name.
- a **queued write** (a block, an unblock): it is dropped (the in-memory view
  keeps it for this process) and an `audit.unwritable` event records which.
Each is logged once, at ERROR (logger `flm_gateway.state`), when it happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from flm_gateway.core.severity import Severity
from flm_gateway.state.audit_watch import AuditWatch
from flm_gateway.state.store import (
    AuditEvent,
    AuditHead,
    AuditRecord,
    RecordRefused,
    StateError,
    StateStore,
)
from flm_gateway.state.stored import cut, stored_text

log = logging.getLogger("flm_gateway.state")

UNWRITABLE = "audit.unwritable"
MAX_TYPE_CHARS = 200


def is_refusal(exc: BaseException) -> bool:
    """Whether retrying cannot help (see the module docstring): everything but a store
    that is down, which the backends raise as a plain `StateError`."""
    if isinstance(exc, RecordRefused):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, StateError)


def cause_of(exc: BaseException) -> str:
    """The class of the error behind `exc` (a RecordRefused names the store's)."""
    return str(getattr(exc, "cause", "")) or type(exc).__name__


def unwritable_event(ts: float, details: dict[str, str]) -> AuditEvent:
    """The `audit.unwritable` event that stands for something lost (a `ts` that is not a
    number becomes the time of writing, as in any stored event)."""
    return AuditEvent(UNWRITABLE, Severity.HIGH, ts=ts, actor="gateway", details=details)


def _told(exc: BaseException) -> str:
    """What the error says, short: a store's message may quote the whole record."""
    return cut(str(exc), 300)


def _replacing(event: AuditEvent, exc: BaseException) -> AuditEvent:
    return unwritable_event(
        event.ts,
        {"event_type": _type_of(event), "error": cause_of(exc)},
    )


def _type_of(event: AuditEvent) -> str:
    try:
        return stored_text(event.type, MAX_TYPE_CHARS)
    except Exception:
        return "<unreadable>"


@dataclass
class Appended:
    """How far `append_audit` got: the records written (in order), how many of the input
    events they stand for, and a tamper finding (`AuditWatch.append`)."""

    expect: AuditHead | None
    records: list[AuditRecord] = field(default_factory=list)
    events: int = 0
    tampered: str | None = None

    def add(self, records: list[AuditRecord], tampered: str | None, events: int) -> None:
        self.records += records
        self.events += events
        self.tampered = self.tampered or tampered
        if records:
            self.expect = records[-1].head


def append_audit(store: StateStore, events: Sequence[AuditEvent], done: Appended) -> None:
    """In the store thread: append `events` after `done.expect` (with the tamper check),
    each refused one replaced (see the module docstring); `done` says how far it got.
    Raises StateError when the store is down (what `done` does not count is not written).
    """
    if not events:
        return
    try:
        records, tampered = AuditWatch.append(store, events, done.expect)
    except Exception as exc:
        if not is_refusal(exc):
            raise
        if len(events) > 1:
            half = len(events) // 2
            append_audit(store, events[:half], done)
            append_audit(store, events[half:], done)
            return
        records, tampered = _append_replacement(store, events[0], exc, done.expect)
    done.add(records, tampered, len(events))


def _append_replacement(
    store: StateStore, event: AuditEvent, exc: BaseException, expect: AuditHead | None
) -> tuple[list[AuditRecord], str | None]:
    replacement = _replacing(event, exc)
    try:
        appended = AuditWatch.append(store, [replacement], expect)
    except Exception as again:
        if not is_refusal(again):
            raise
        raise StateError(
            f"the state store refuses even an {UNWRITABLE} event ({cause_of(again)}): "
            "it refuses every record"
        ) from None
    log.error(
        "audit event %s refused by the state store (%s: %s); recorded as %s at seq %d",
        replacement.details["event_type"],
        cause_of(exc),
        _told(exc),
        UNWRITABLE,
        appended[0][-1].seq,
        extra={"event": UNWRITABLE},
    )
    return appended


def refused_write(name: str, exc: BaseException) -> AuditEvent:
    """Log a queued write the store refused (dropped); the event that records it."""
    log.error(
        "state store write %s refused (%s: %s); dropped",
        name,
        cause_of(exc),
        _told(exc),
        extra={"event": UNWRITABLE},
    )
    return unwritable_event(time.time(), {"write": stored_text(name), "error": cause_of(exc)})


def refused_counters(refused: dict[str, str], deltas: dict[str, int]) -> list[AuditEvent]:
    """Log counters the store refused (their deltas dropped); the events that record them."""
    events = []
    for name, cause in refused.items():
        log.error(
            "state store refused counter %s (%s); its delta %s is dropped",
            stored_text(name),
            cause,
            deltas.get(name, 0),
            extra={"event": UNWRITABLE},
        )
        events.append(unwritable_event(time.time(), {"counter": stored_text(name), "error": cause}))
    return events
