"""What the admin commands (`keys`, `security`) share: opening the state store,
auditing the action, time and duration arguments, tables.

Tables and JSON show stored text (audit details carry client paths, key names
are whatever an operator typed) without raw control characters: table cells
through `text.printable`, JSON with every non-ASCII character escaped.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from flm_gateway.cli.common import add_config_argument, resolve_config
from flm_gateway.config import LoadedConfig
from flm_gateway.config.types import parse_duration
from flm_gateway.core.severity import Severity
from flm_gateway.core.text import printable
from flm_gateway.state import StateError, StateStore, describe_store, open_store
from flm_gateway.state.store import AuditEvent


class CommandError(Exception):
    """A user error: printed without a traceback, exit code 1."""


def actor() -> str:
    """Who runs this command, for the audit log."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):
        return "cli:unknown"


def with_store(
    body: Callable[[argparse.Namespace, LoadedConfig, StateStore], int],
) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: load the config, open its store, map errors to messages."""

    def run(args: argparse.Namespace) -> int:
        loaded = resolve_config(args)
        if loaded is None:
            return 1
        try:
            store = open_store(loaded, actor())
        except StateError as exc:
            print(f"cannot open the state store ({describe_store(loaded)}): {exc}", file=sys.stderr)
            return 1
        try:
            return body(args, loaded, store)
        except (CommandError, StateError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            store.close()

    return run


def store_command(
    subparsers: Any,
    name: str,
    help_: str,
    body: Callable[[argparse.Namespace, LoadedConfig, StateStore], int],
) -> argparse.ArgumentParser:
    """The parser of an admin subcommand that runs `body` on the state store (`with_store`),
    with --config; the caller adds the subcommand's own arguments."""
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_)
    add_config_argument(parser)
    parser.set_defaults(func=with_store(body))
    return parser


def audit(
    store: StateStore, type_: str, severity: Severity = Severity.INFO, **details: Any
) -> None:
    store.append_audit(
        [
            AuditEvent(
                type_,
                severity,
                actor=actor(),
                key_id=details.pop("key_id", None),
                ip=details.pop("ip", None),
                details=details,
            )
        ]
    )


def parse_when(text: str, *, future: bool) -> float:
    """A time from an ISO 8601 date/time or a duration (from now, forward or back)."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(
                f"{text!r} is neither a duration (30m, 24h, 7d) nor a date (2026-01-31T12:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return time.time() + seconds if future else time.time() - seconds


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))
