"""`flm-gateway security blocklist|audit|intrusion|anomaly`: the block list and the audit log.

- `blocklist list [--all] [--json]`, `add CIDR [--duration D] [--reason TEXT]`,
  `remove CIDR`, `clear`: the stored block list (flm.yaml's `security.ip.block`
  is listed, and changed in the file). A running gateway applies changes
  within about a second. Every change is audited.
- `audit [--since] [--until] [--type] [--severity] [--ip] [--key] [--limit] [--json]`:
  the audit log, oldest first. `audit verify [--anchor SEQ[:HASH]] [--anchor-file PATH]`
  checks its hash chain, its MACs (with the configured audit key) and its anchors (the
  anchor file, plus heads kept elsewhere: a logged `audit head`, the
  `flm_audit_head_seq` metric, a copy of the anchor file), prints every problem with the
  records it concerns (exit 1), and the head to keep elsewhere.
- `intrusion` and `anomaly`: the same query limited to those event types.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from flm_gateway.cli.admin_command import (
    CommandError,
    audit,
    duration_arg,
    iso,
    parse_when,
    print_json,
    print_table,
    store_command,
)
from flm_gateway.config import LoadedConfig
from flm_gateway.config.security_settings import normalise_network
from flm_gateway.core.severity import Severity
from flm_gateway.state.anchor import Anchor, read_anchor_file
from flm_gateway.state.store import AuditQuery, AuditRecord, BlockRecord, StateStore
from flm_gateway.state.verify import Problem, VerifyReport, verify

_ANCHOR_ARG = re.compile(r"(\d+)(?::([0-9a-f]{64}))?")


def register(subparsers: Any) -> None:
    security = subparsers.add_parser("security", help="block list and audit log")
    sub = security.add_subparsers(dest="security_command", metavar="AREA", required=True)

    blocklist = sub.add_parser("blocklist", help="list, add, remove or clear blocked addresses")
    actions = blocklist.add_subparsers(dest="blocklist_command", metavar="ACTION", required=True)
    listing = store_command(
        actions, "list", "active blocks (--all: expired ones too)", run_block_list
    )
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--json", action="store_true")
    add = store_command(actions, "add", "block an address or CIDR", run_block_add)
    add.add_argument("cidr")
    add.add_argument("--duration", type=duration_arg, help="default: until removed")
    add.add_argument("--reason", default="manual")
    remove = store_command(actions, "remove", "unblock an address or CIDR", run_block_remove)
    remove.add_argument("cidr")
    store_command(actions, "clear", "remove every stored block", run_block_clear)

    for name, help_, types in (
        ("audit", "query the audit log, or `audit verify` its hash chain", ()),
        ("intrusion", "intrusion detection events", ("intrusion.",)),
        ("anomaly", "anomaly detection events", ("anomaly.",)),
    ):
        parser = store_command(sub, name, help_, run_audit)
        parser.set_defaults(fixed_types=types)
        if name == "audit":
            parser.add_argument("action", nargs="?", choices=["verify"], help="verify the log")
            parser.add_argument(
                "--anchor",
                action="append",
                default=[],
                type=_anchor_arg,
                metavar="SEQ[:HASH]",
                help="verify: a head kept elsewhere (a logged `audit head`, the metric)",
            )
            parser.add_argument(
                "--anchor-file",
                action="append",
                default=[],
                type=Path,
                metavar="PATH",
                help="verify: also check a copy of an anchor file kept elsewhere",
            )
        parser.add_argument("--since", help="a duration back (1h, 7d) or a date")
        parser.add_argument("--until", help="a duration back or a date")
        parser.add_argument("--type", action="append", default=[], help="event type; a.b. = prefix")
        parser.add_argument(
            "--severity", choices=[s.value for s in Severity], help="at least this severity"
        )
        parser.add_argument("--ip")
        parser.add_argument("--key", help="key id")
        parser.add_argument("--limit", type=int, default=200)
        parser.add_argument("--json", action="store_true")


def _anchor_arg(text: str) -> Anchor:
    match = _ANCHOR_ARG.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SEQ or SEQ:HASH (a record number, and its 64-hex-digit hash)"
        )
    seq, hash_ = int(match[1]), match[2]
    shown = f"{seq}:{hash_[:16]}..." if hash_ else str(seq)
    return Anchor(seq, hash_, f"the anchor {shown} given on the command line")


def _cidr(text: str) -> str:
    try:
        return normalise_network(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _block_json(block: BlockRecord, now: float, source: str | None = None) -> dict[str, Any]:
    return {
        "cidr": block.cidr,
        "source": source or block.source,
        "reason": block.reason,
        "created_at": iso(block.created_at) if block.created_at else None,
        "expires_at": iso(block.expires_at) if block.expires_at else None,
        "active": block.active_at(now),
        "strikes": block.strikes,
    }


def run_block_list(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    now = time.time()
    configured = [
        BlockRecord(cidr, "flm.yaml", "config", 0.0) for cidr in loaded.config.security.ip.block
    ]
    blocks = [
        _block_json(b, now)
        for b in configured + store.list_blocks()
        if args.all or b.active_at(now)
    ]
    if args.json:
        print_json(blocks)
        return 0
    if not blocks:
        print("no blocked addresses")
        return 0
    print_table(
        ["CIDR", "SOURCE", "REASON", "EXPIRES", "STRIKES", "ACTIVE"],
        [
            [
                b["cidr"],
                b["source"],
                b["reason"],
                b["expires_at"] or "never",
                str(b["strikes"]),
                "yes" if b["active"] else "no",
            ]
            for b in blocks
        ],
    )
    return 0


def run_block_add(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    cidr = _cidr(args.cidr)
    now = time.time()
    expires = now + args.duration if args.duration else None
    store.put_block(BlockRecord(cidr, args.reason, "manual", now, expires))
    audit(store, "ip.blocked", Severity.MEDIUM, ip=cidr, reason=args.reason, expires_at=expires)
    print(f"blocked {cidr}" + (f" until {iso(expires)}" if expires else ""))
    return 0


def run_block_remove(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    cidr = _cidr(args.cidr)
    if cidr in loaded.config.security.ip.block:
        raise CommandError(f"{cidr} is blocked in {loaded.display_name}; remove it there")
    if not store.remove_block(cidr):
        raise CommandError(f"{cidr} is not in the stored block list")
    audit(store, "ip.unblocked", Severity.MEDIUM, ip=cidr)
    print(f"unblocked {cidr}")
    return 0


def run_block_clear(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    removed = store.clear_blocks()
    audit(store, "ip.blocklist_cleared", Severity.MEDIUM, removed=removed)
    print(f"removed {removed} block(s)")
    return 0


def _record_row(record: AuditRecord) -> list[str]:
    event = record.event
    details = " ".join(f"{k}={v}" for k, v in sorted(event.details.items()) if v is not None)
    return [
        str(record.seq),
        iso(event.ts),
        event.severity.value,
        event.type,
        event.ip or "-",
        event.key_id or "-",
        event.request_id or event.actor or "-",
        details[:120],
    ]


def run_audit(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    if getattr(args, "action", None) == "verify":
        return run_verify(args, store)
    types = tuple(args.fixed_types) + tuple(args.type)
    query = AuditQuery(
        since=parse_when(args.since, future=False) if args.since else None,
        until=parse_when(args.until, future=False) if args.until else None,
        types=types,
        min_severity=Severity(args.severity) if args.severity else None,
        ip=args.ip,
        key_id=args.key,
        limit=max(1, args.limit),
    )
    records = store.query_audit(query)
    if args.json:
        print_json([record.to_json() for record in records])
        return 0
    if not records:
        print("no matching events")
        return 0
    print_table(
        ["SEQ", "TIME", "SEVERITY", "TYPE", "IP", "KEY", "REQUEST/ACTOR", "DETAILS"],
        [_record_row(record) for record in records],
    )
    return 0


def run_verify(args: argparse.Namespace, store: StateStore) -> int:
    files = [store.anchor.path] if store.anchor is not None else []
    files += [path for path in args.anchor_file if path not in files]
    anchors: list[Anchor] = list(args.anchor)
    file_problems: list[Problem] = []
    missing: list[Path] = []
    for path in files:
        reading = read_anchor_file(path, store.audit_key)
        anchors += reading.anchors
        file_problems += [Problem(text) for text in reading.problems]
        if not reading.exists:
            missing.append(path)
    report = verify(store.iter_audit(), store.audit_key, anchors)
    report.problems += file_problems
    report.notes += [f"no anchor file at {path}" for path in missing]
    if args.json:
        print_json(_verify_json(report, store, len(anchors)))
    else:
        _print_verify(report, store, len(anchors))
    return 0 if report.ok else 1


def _verify_json(report: VerifyReport, store: StateStore, anchors: int) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "records": report.records,
        "head_seq": report.head.seq,
        "head_hash": report.head.hash,
        "key_fingerprint": store.audit_key.fingerprint if store.audit_key else None,
        "keyed_from": report.keyed_from,
        "anchors_checked": anchors,
        "anchored_to": report.anchored_to,
        "first_bad_seq": report.first_bad_seq,
        "problem": report.problems[0].text if report.problems else "",
        "problems": [{"text": p.text, "first": p.first, "last": p.last} for p in report.problems],
        "notes": report.notes,
    }


def _print_verify(report: VerifyReport, store: StateStore, anchors: int) -> None:
    head = f"head {report.head.seq} {report.head.hash}"
    if report.ok:
        print(f"audit log intact: {report.records} record(s), {head}")
    else:
        print(
            f"audit log BROKEN: {len(report.problems)} problem(s) in {report.records} "
            f"record(s), {head}"
        )
        for problem in report.problems:
            print(f"  - {problem.text}")
    if store.audit_key is not None:
        keyed = (
            f"records {report.keyed_from}-{report.head.seq} keyed"
            if report.keyed_from
            else "no record keyed"
        )
        print(f"  key {store.audit_key.fingerprint}: {keyed}")
    anchored = f", newest held: record {report.anchored_to}" if report.anchored_to else ""
    print(f"  anchors checked: {anchors}{anchored}")
    for note in report.notes:
        print(f"  note: {note}")
