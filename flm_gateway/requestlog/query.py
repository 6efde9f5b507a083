"""Searching and summarising the request log: filters, percentiles, statistics.

Filters combine with AND. Times accept an ISO date/time (UTC unless it has an
offset) or a duration back from now (`15m`, `24h`, `7d`). Status accepts a code
(`404`), a class (`2xx`, `4xx`, `5xx`) or `error` (5xx, or no response at all).
Model, engine, key and IP match exactly; path matches a prefix.

Statistics count requests, 4xx, errors (5xx or no response) and the error rate,
and give latency p50/p95/p99 (nearest rank, in milliseconds) and token sums per
group. Percentiles are computed in Python from the matching rows, which suits
the request volumes of a self-hosted gateway; narrow with `--since` otherwise.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flm_gateway.config.types import parse_duration
from flm_gateway.core.sql_where import Condition, Where, starts_with
from flm_gateway.requestlog.log_table import RequestLogStore

GROUPS = {"model": "model", "engine": "engine", "key": "key_id", "listener": "listener"}
_STATUS_CLASS = re.compile(r"^([1-5])xx$")


class FilterError(ValueError):
    """A filter value the user typed cannot be understood."""


def parse_time(text: str, now: float | None = None) -> float:
    """Unix time from an ISO timestamp or a duration back from now ("24h")."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"{text!r} is neither a time (2025-01-31T12:00) nor a duration (15m, 24h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _status_clause(spec: str) -> Condition:
    spec = spec.strip().lower()
    if spec == "error":
        return "(status IS NULL OR status >= 500)", []
    match = _STATUS_CLASS.match(spec)
    if match:
        low = int(match.group(1)) * 100
        return "(status >= ? AND status < ?)", [low, low + 100]
    if spec.isdigit() and 100 <= int(spec) <= 599:
        return "status = ?", [int(spec)]
    raise FilterError(f"status {spec!r}: use a code (404), a class (5xx) or 'error'")


@dataclass(frozen=True)
class LogFilter:
    """The conditions of one `logs` query."""

    since: float | None = None
    until: float | None = None
    status: str | None = None
    model: str | None = None
    engine: str | None = None
    key: str | None = None
    ip: str | None = None
    path: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL WHERE clause (placeholders only, never user text) and its parameters."""
        where = Where()
        where.time_range("ts", self.since, self.until)
        if self.status is not None:
            where.add(_status_clause(self.status))
        where.equals("model", self.model)
        where.equals("engine", self.engine)
        where.equals("key_id", self.key)
        where.equals("client_ip", self.ip)
        if self.path is not None:
            where.add(starts_with("path", self.path))
        return where.sql(), where.params


def search(store: RequestLogStore, log_filter: LogFilter, limit: int) -> list[dict[str, Any]]:
    """Matching records, newest first, as plain dicts."""
    where, params = log_filter.where()
    return [dict(row) for row in store.select(where, params, limit)]


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class GroupStats:
    """Statistics of one group of records."""

    group: str
    requests: int = 0
    client_errors: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)

    def add(self, row: dict[str, Any]) -> None:
        self.requests += 1
        status = row["status"]
        if status is None or status >= 500:
            self.errors += 1
        elif status >= 400:
            self.client_errors += 1
        self.prompt_tokens += row["prompt_tokens"] or 0
        self.completion_tokens += row["completion_tokens"] or 0
        if row["latency_ms"] is not None:
            self.latencies.append(row["latency_ms"])

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "group": self.group,
            "requests": self.requests,
            "4xx": self.client_errors,
            "errors": self.errors,
            "error_rate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "p50_ms": percentile(ordered, 0.50),
            "p95_ms": percentile(ordered, 0.95),
            "p99_ms": percentile(ordered, 0.99),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def stats(
    store: RequestLogStore, log_filter: LogFilter, by: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """For each grouping in `by` (model, engine, key, listener) plus `total`: group statistics."""
    where, params = log_filter.where()
    rows = [dict(row) for row in store.select(where, params, None)]
    result: dict[str, list[dict[str, Any]]] = {}
    total = GroupStats("all")
    for row in rows:
        total.add(row)
    result["total"] = [total.as_dict()]
    for name in by:
        column = GROUPS[name]
        groups: dict[str, GroupStats] = {}
        for row in rows:
            value = row[column] or "-"
            groups.setdefault(value, GroupStats(value)).add(row)
        result[name] = [
            g.as_dict() for g in sorted(groups.values(), key=lambda g: (-g.requests, g.group))
        ]
    return result
