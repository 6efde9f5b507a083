"""Verify the audit log: its chain, its MACs and its anchors, and say exactly what is wrong.

`verify(records, key, anchors)` reads every record once, in sequence order, and
reports each problem as a range of records with its cause, not just the first:
- **chain**: seqs must run 1, 2, 3, ... (a gap: records deleted), each record
  must link to the one before (`prev_hash`), and its hash must match its content
  (else: edited). After a break the check resynchronises on the next record,
  so several independent edits are each reported.
- **MACs** (with the key): every record must carry a MAC by this key. Records
  without one are accepted only as a prefix written before the key existed,
  followed by keyed records (an older log, upgraded); a log with no keyed
  record at all, or an unkeyed record after a keyed one, was written without
  the key. A MAC that does not match means the record was edited, inserted, or
  re-chained after a deletion.
- **anchors** (`flm_gateway.state.anchor`, or given on the command line): the
  log must still hold record `seq` with the anchor's hash. A shorter log has
  lost its tail (`records 120-135 missing at the tail: ...`); another hash at
  that seq means the log was rewritten or replaced after the anchor was taken.

What a clean report does not prove (and the notes say): records newer than the
newest anchor could have been cut off, and an anchor file that was rolled back
together with the log agrees with it. An anchor kept out of reach (see
docs/security.md) closes both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from flm_gateway.state.anchor import Anchor
from flm_gateway.state.chain import GENESIS, AuditKey, MacCheck, fingerprint_of, record_hash
from flm_gateway.state.store import AuditHead, AuditRecord


@dataclass(frozen=True)
class Problem:
    """Something wrong with records `first`..`last` (None: not about a record range)."""

    text: str
    first: int | None = None
    last: int | None = None


@dataclass
class VerifyReport:
    records: int = 0
    head: AuditHead = field(default_factory=lambda: AuditHead(0, GENESIS))
    keyed_from: int | None = None
    """The first keyed record (None: none is)."""
    anchored_to: int | None = None
    """The newest anchor's seq that the log still holds (None: no anchor held)."""
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.first for p in self.problems if p.first is not None]
        return min(seqs) if seqs else None


def _span(first: int, last: int, singular: str = "", plural: str = "") -> str:
    """`record 7` or `records 7-9`, with the verb that agrees (`singular`, `plural`)."""
    if first == last:
        return f"record {first}" + (f" {singular}" if singular else "")
    return f"records {first}-{last}" + (f" {plural}" if plural else "")


class _Runs:
    """Consecutive records with the same finding become one problem."""

    def __init__(self, report: VerifyReport) -> None:
        self._report = report
        self._open: dict[str, tuple[int, int]] = {}

    def add(self, reason: str, seq: int) -> None:
        first, last = self._open.get(reason, (seq, seq - 1))
        if last != seq - 1:
            self._close(reason)
            first = seq
        self._open[reason] = (first, seq)

    def _close(self, reason: str) -> None:
        first, last = self._open.pop(reason)
        self._report.problems.append(Problem(f"{_span(first, last)}: {reason}", first, last))

    def close_all(self) -> None:
        for reason in list(self._open):
            self._close(reason)


def _mac_reason(check: MacCheck, record: AuditRecord, key: AuditKey, keyed: bool) -> str | None:
    if check is MacCheck.OK:
        return None
    if check is MacCheck.MISSING:
        # Before the first keyed record: the log predates the key (decided at the end).
        return "no MAC, after keyed records: written without the audit key" if keyed else None
    if check is MacCheck.OTHER_KEY:
        return (
            f"keyed with another key (fingerprint {fingerprint_of(record.mac)}, this key is "
            f"{key.fingerprint})"
        )
    return (
        "the MAC does not match: the record was edited, inserted, or re-chained after "
        "records were deleted, without the audit key"
    )


def verify(
    records: Iterable[AuditRecord],
    key: AuditKey | None = None,
    anchors: Sequence[Anchor] = (),
) -> VerifyReport:
    """Check every record and every anchor (see the module docstring)."""
    report = VerifyReport()
    runs = _Runs(report)
    wanted = {anchor.seq for anchor in anchors}
    found: dict[int, str] = {}
    prev_hash, prev_seq = GENESIS, 0
    unkeyed_prefix = 0
    for record in records:
        if record.seq != prev_seq + 1:
            if record.seq > prev_seq + 1:
                gap = _span(prev_seq + 1, record.seq - 1)
                report.problems.append(
                    Problem(f"{gap}: missing (deleted)", prev_seq + 1, record.seq - 1)
                )
            else:
                report.problems.append(
                    Problem(
                        f"record {record.seq}: out of order after record {prev_seq}", record.seq
                    )
                )
        elif record.prev_hash != prev_hash:
            runs.add(
                f"does not link to record {prev_seq} (prev_hash differs): records before it "
                "were removed or replaced",
                record.seq,
            )
        content = record_hash(
            record.prev_hash, record.seq, record.event, record.event.details_json()
        )
        if record.hash != content:
            runs.add("the hash does not match the content: the record was edited", record.seq)
        if key is not None:
            check = key.check("record", record.hash, record.mac)
            if check is MacCheck.MISSING and report.keyed_from is None:
                unkeyed_prefix = record.seq
            elif report.keyed_from is None and check is not MacCheck.MISSING:
                report.keyed_from = record.seq
            reason = _mac_reason(check, record, key, report.keyed_from is not None)
            if reason is not None:
                runs.add(reason, record.seq)
        if record.seq in wanted:
            found[record.seq] = record.hash
        prev_hash, prev_seq = record.hash, record.seq
        report.records += 1
    runs.close_all()
    report.head = AuditHead(prev_seq, prev_hash)
    if key is not None and unkeyed_prefix:
        if report.keyed_from is None:
            report.problems.append(
                Problem(
                    f"{_span(1, unkeyed_prefix)}: no record carries a MAC: the log was written "
                    "without the audit key (replaced?), or this is an older log and no "
                    "gateway of this version has written to it yet",
                    1,
                    unkeyed_prefix,
                )
            )
        else:
            report.notes.append(
                f"{_span(1, unkeyed_prefix, 'predates', 'predate')} the audit key: their "
                "chain is checked, their origin is not"
            )
    _check_anchors(report, anchors, found)
    report.problems.sort(key=lambda p: (p.first is None, p.first or 0))
    return report


def _check_anchors(report: VerifyReport, anchors: Sequence[Anchor], found: dict[int, str]) -> None:
    """One problem for the tail (the highest anchor the log lacks) and one for the first
    anchor whose record differs, each saying how many other anchors agree."""
    head = report.head.seq
    beyond = [anchor for anchor in anchors if anchor.seq > head]
    differ = [
        anchor
        for anchor in anchors
        if anchor.seq <= head and anchor.hash is not None and found.get(anchor.seq) != anchor.hash
    ]
    held = [anchor.seq for anchor in anchors if 0 < anchor.seq <= head and anchor not in differ]
    report.anchored_to = max(held) if held else None
    if beyond:
        anchor = max(beyond, key=lambda a: a.seq)
        said = f"says the log held {anchor.seq} record(s)"
        if anchor.hash:
            said += f", the last with hash {anchor.hash[:16]}..."
        ends = f"the log ends at record {head}" if head else "the log is empty"
        report.problems.append(
            Problem(
                f"{_span(head + 1, anchor.seq)} missing at the tail: {anchor.source} {said}; "
                f"{ends}{_others(len(beyond) - 1)}",
                head + 1,
                anchor.seq,
            )
        )
    if differ:
        anchor = min(differ, key=lambda a: a.seq)
        holds = found.get(anchor.seq)
        now = f"hash {holds[:16]}..." if holds else "no such record"
        report.problems.append(
            Problem(
                f"record {anchor.seq} is not the one {anchor.source} recorded ({now} instead "
                f"of {(anchor.hash or '')[:16]}...): the log was rewritten or replaced after "
                f"that anchor{_others(len(differ) - 1)}",
                anchor.seq,
            )
        )
    if report.anchored_to is not None and report.anchored_to < head:
        report.notes.append(
            f"{_span(report.anchored_to + 1, head, 'is', 'are')} newer than the newest anchor: "
            "a log cut back to within them would not be detected"
        )
    elif not anchors and head:
        report.notes.append(
            "no anchor: a log cut short or swapped for an older copy cannot be detected"
        )


def _others(count: int) -> str:
    return f" ({count} other anchor(s) disagree too)" if count else ""
