"""`flm-gateway logs [stats]`: search the request log, or summarise it.

`logs` lists matching requests, newest first (`--limit`, default 50);
`logs stats` gives counts, error rate and latency percentiles overall and by
model, engine and key (`--by` to choose). Both read the state database of the
config's state directory (while the gateway runs, too) and print a table, or
JSON with `--json`. Records reach the database within about a second.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any

from flm_gateway.cli.common import add_config_argument, resolve_config
from flm_gateway.core.text import printable
from flm_gateway.observability.outcomes import status_label
from flm_gateway.requestlog.log_table import RequestLogStore, request_log_path
from flm_gateway.requestlog.query import GROUPS, FilterError, LogFilter, parse_time, search, stats

SEARCH_COLUMNS = (
    ("time", "ts"),
    ("request id", "request_id"),
    ("ip", "client_ip"),
    ("key", "key_id"),
    ("method", "method"),
    ("path", "path"),
    ("model", "model"),
    ("engine", "engine"),
    ("status", "status"),
    ("ms", "latency_ms"),
    ("ttft", "ttft_ms"),
    ("tokens", "tokens"),
    ("error", "error_kind"),
)
STATS_COLUMNS = (
    "group",
    "requests",
    "4xx",
    "errors",
    "error_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "prompt_tokens",
    "completion_tokens",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="search the request log (logs stats: counts, error rate, latency percentiles)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "action", nargs="?", choices=("search", "stats"), default="search", help="default: search"
    )
    add_config_argument(parser)
    parser.add_argument("--since", help="start: ISO time or a duration back (15m, 24h, 7d)")
    parser.add_argument("--until", help="end: ISO time or a duration back")
    parser.add_argument("--status", help="a code (404), a class (5xx) or 'error'")
    parser.add_argument("--model", help="model the client asked for")
    parser.add_argument("--engine", help="engine that served the request")
    parser.add_argument("--key", help="API key id")
    parser.add_argument("--ip", help="client IP address")
    parser.add_argument("--path", help="request path prefix, e.g. /v1/chat")
    parser.add_argument("--limit", type=int, default=50, help="records to list (default 50)")
    parser.add_argument(
        "--by",
        action="append",
        choices=sorted(GROUPS),
        help="stats: group by this (repeatable; default model, engine and key)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(func=run_logs)


def _filter(args: argparse.Namespace) -> LogFilter:
    return LogFilter(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        status=args.status,
        model=args.model,
        engine=args.engine,
        key=args.key,
        ip=args.ip,
        path=args.path,
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if value >= 0.1 or value == 0 else f"{value:.3f}"
    return printable(str(value))  # stored escaped already; older rows may not be


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with left-aligned columns."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _search_row(record: dict[str, Any]) -> list[Any]:
    moment = datetime.datetime.fromtimestamp(record["ts"], datetime.UTC)
    tokens = None
    if record["prompt_tokens"] is not None or record["completion_tokens"] is not None:
        tokens = f"{record['prompt_tokens'] or 0}/{record['completion_tokens'] or 0}"
        tokens += "~" if record["tokens_estimated"] else ""
    values = {
        **record,
        "ts": moment.strftime("%Y-%m-%d %H:%M:%S"),
        "tokens": tokens,
        "status": status_label(record["status"]),
    }
    return [values[key] for _, key in SEARCH_COLUMNS]


def run_logs(args: argparse.Namespace) -> int:
    loaded = resolve_config(args)
    if loaded is None:
        return 1
    try:
        log_filter = _filter(args)
        log_filter.where()
    except FilterError as exc:
        print(f"flm-gateway logs: {exc}", file=sys.stderr)
        return 2
    path = request_log_path(loaded)
    try:
        store = RequestLogStore.open(path, create=False)
    except FileNotFoundError:
        print(f"no request log yet ({path} does not exist)", file=sys.stderr)
        return 1
    try:
        if not store.has_table():
            print(f"no request log yet in {path}", file=sys.stderr)
            return 1
        if args.action == "stats":
            return _print_stats(store, log_filter, args)
        records = search(store, log_filter, max(1, args.limit))
    finally:
        store.close()
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif records:
        headers = [title for title, _ in SEARCH_COLUMNS]
        print(format_table(headers, [_search_row(r) for r in records]))
    else:
        print("no matching requests")
    return 0


def _print_stats(store: RequestLogStore, log_filter: LogFilter, args: argparse.Namespace) -> int:
    by = args.by or ["model", "engine", "key"]
    result = stats(store, log_filter, by)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    sections = []
    for name, groups in result.items():
        title = "all requests" if name == "total" else f"by {name}"
        rows = [[group[column] for column in STATS_COLUMNS] for group in groups]
        headers = [
            name if column == "group" and name != "total" else column for column in STATS_COLUMNS
        ]
        sections.append(f"{title}\n{format_table(headers, rows)}")
    print("\n\n".join(sections))
    return 0
