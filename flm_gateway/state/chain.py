"""The audit log's chain: each record commits to every record before it, and is keyed.

- **Hash chain** (anyone can check it): `hash = SHA-256(prev_hash "\\n" canonical
  JSON of seq and the event's fields)`, starting from `GENESIS`. Editing,
  inserting or deleting a record breaks the chain at that point.
- **MAC** (only a holder of the audit key can make or check one):
  `mac = "<key fingerprint>:" + hex HMAC-SHA256(key, "flm-audit-record\\n" hash)`.
  The hash commits to the record and to every record before it, so a record's
  MAC vouches for the whole log up to it. Recomputing the hashes after an edit
  or a deletion (re-chaining) is possible for anyone; making the MACs match is
  not, without the key. The key never enters the store (`flm_gateway.state.audit_key`).

What neither can show is a missing tail: a log cut after any record, or an
older copy of it, is a valid chain with valid MACs. The anchor
(`flm_gateway.state.anchor`), written outside the store, catches that.
`flm_gateway.state.verify` checks all three.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from flm_gateway.state.store import (
    AuditEvent,
    AuditHead,
    AuditRecord,
    AuditTampered,
    RecordRefused,
    canonical_json,
)
from flm_gateway.state.stored import stored_event

GENESIS = "0" * 64
_KEY_LABEL = b"flm-gateway audit log v1"


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


class MacCheck(StrEnum):
    OK = "ok"
    MISSING = "missing"
    OTHER_KEY = "other_key"
    BAD = "bad"


@dataclass(frozen=True)
class AuditKey:
    """The secret the log's MACs are made with, and its public fingerprint."""

    secret: bytes = field(repr=False)
    fingerprint: str

    @classmethod
    def derive(cls, material: str | bytes) -> AuditKey:
        """The key derived from a configured secret (any text of 32+ characters)."""
        raw = material.encode() if isinstance(material, str) else material
        secret = hmac.new(raw, _KEY_LABEL, hashlib.sha256).digest()
        fingerprint = hashlib.sha256(b"fingerprint\n" + secret).hexdigest()[:16]
        return cls(secret, fingerprint)

    def mac(self, purpose: str, text: str) -> str:
        """`<fingerprint>:<hex>`: the MAC of `text` for `purpose` (`record`, `anchor`)."""
        digest = hmac.new(self.secret, f"flm-audit-{purpose}\n{text}".encode(), hashlib.sha256)
        return f"{self.fingerprint}:{digest.hexdigest()}"

    def check(self, purpose: str, text: str, mac: str | None) -> MacCheck:
        if not mac:
            return MacCheck.MISSING
        if not mac.startswith(self.fingerprint + ":"):
            return MacCheck.OTHER_KEY
        good = hmac.compare_digest(mac, self.mac(purpose, text))
        return MacCheck.OK if good else MacCheck.BAD


def fingerprint_of(mac: str | None) -> str:
    """The key fingerprint a MAC names (for messages)."""
    return (mac or "").partition(":")[0] or "none"


def link(
    events: Sequence[AuditEvent], head: AuditHead | None, key: AuditKey | None
) -> list[AuditRecord]:
    """`events` in their stored form (`flm_gateway.state.stored`), chained after `head`
    (None: an empty log), each with its MAC when keyed. What is hashed is what is stored.
    Raises RecordRefused for an event that has no stored form."""
    seq, prev_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
    records = []
    for original in events:
        try:
            event = stored_event(original)
        except Exception as exc:
            raise RecordRefused.of(exc) from None
        seq += 1
        digest = record_hash(prev_hash, seq, event, event.details_json())
        mac = key.mac("record", digest) if key is not None else None
        records.append(AuditRecord(seq, event, prev_hash, digest, mac))
        prev_hash = digest
    return records


def require_kept(expect: AuditHead, kept_hash: str | None, head: AuditHead | None) -> None:
    """Raise AuditTampered unless record `expect.seq` still has `expect.hash`.

    `kept_hash` is the hash the log holds at `expect.seq` (None: no such record) and
    `head` its last record: both only for the message."""
    if kept_hash == expect.hash:
        return
    if kept_hash is None:
        ends = f"the log now ends at record {head.seq}" if head else "the log is now empty"
        raise AuditTampered(f"record {expect.seq} (hash {expect.hash[:16]}...) is gone: {ends}")
    raise AuditTampered(
        f"record {expect.seq} was replaced: hash {kept_hash[:16]}... instead of "
        f"{expect.hash[:16]}..."
    )
