"""The audit log's hash chain: each record commits to the one before it.

`hash = SHA-256(prev_hash || "\\n" || canonical JSON of the record's fields)`,
starting from `GENESIS`. Editing, inserting or deleting any record breaks the
chain at that point (`verify`); recomputing every later hash to hide an edit
changes the head hash, which `flm-gateway security audit verify` prints so an
operator can anchor it elsewhere (a truncated tail is only detectable that way).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from flm_gateway.state.store import AuditEvent, AuditRecord, canonical_json

GENESIS = "0" * 64


def record_hash(prev_hash: str, seq: int, event: AuditEvent, details_json: str) -> str:
    """The hash of record `seq` holding `event`, chained to `prev_hash`."""
    body = canonical_json(
        [
            seq,
            repr(float(event.ts)),
            event.type,
            event.severity.value,
            event.ip,
            event.key_id,
            event.request_id,
            event.listener,
            event.actor,
            details_json,
        ]
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """The outcome of `verify`."""

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str = ""


def verify(records: Iterable[AuditRecord]) -> ChainReport:
    """Check every link of the chain, in sequence order; stops at the first broken one."""
    prev_hash = GENESIS
    prev_seq = 0
    count = 0
    for record in records:
        if record.seq != prev_seq + 1:
            return ChainReport(
                False,
                count,
                prev_seq,
                prev_hash,
                record.seq,
                f"sequence jumps from {prev_seq} to {record.seq} (records deleted)",
            )
        if record.prev_hash != prev_hash:
            return ChainReport(
                False,
                count,
                prev_seq,
                prev_hash,
                record.seq,
                "prev_hash does not match the previous record (records edited or removed)",
            )
        expected = record_hash(prev_hash, record.seq, record.event, record.event.details_json())
        if record.hash != expected:
            return ChainReport(
                False,
                count,
                prev_seq,
                prev_hash,
                record.seq,
                "hash does not match the record's content (record edited)",
            )
        prev_hash, prev_seq = record.hash, record.seq
        count += 1
    return ChainReport(True, count, prev_seq, prev_hash)
