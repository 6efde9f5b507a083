"""A SQL WHERE clause built from optional filters, for the SQLite queries that search.

The request log (`flm_gateway.requestlog.query`) and the audit log
(`flm_gateway.state.sqlite`) both turn a set of optional filters into one WHERE
clause. Values always travel as `?` parameters, never inside the SQL text, so a
filter typed by a user cannot change the query; only column names (from our own
code) are formatted into it. Conditions combine with AND; no condition at all is
`1 = 1` (every row).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Condition = tuple[str, list[Any]]
"""One condition: its SQL (with `?` placeholders) and the values of those placeholders."""


def starts_with(column: str, prefix: str) -> Condition:
    """`column` starts with `prefix` (exactly: no LIKE wildcards, no case folding)."""
    return f"substr({column}, 1, ?) = ?", [len(prefix), prefix]


def any_of(conditions: Iterable[Condition]) -> Condition:
    """At least one of `conditions` holds (there must be at least one)."""
    clauses: list[str] = []
    params: list[Any] = []
    for clause, values in conditions:
        clauses.append(clause)
        params += values
    return "(" + " OR ".join(clauses) + ")", params


def one_of(column: str, values: Sequence[Any]) -> Condition:
    """`column` equals one of `values` (there must be at least one)."""
    return f"{column} IN ({', '.join('?' for _ in values)})", list(values)


class Where:
    """The conditions of one query, combined with AND, and their parameters in order."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: Condition) -> None:
        clause, values = condition
        self.clauses.append(clause)
        self.params += values

    def equals(self, column: str, value: Any) -> None:
        """`column = value`; no condition when `value` is None (the filter is not set)."""
        if value is not None:
            self.add((f"{column} = ?", [value]))

    def time_range(self, column: str, since: float | None, until: float | None) -> None:
        """`column` at or after `since` and before `until`; a None bound is no bound."""
        if since is not None:
            self.add((f"{column} >= ?", [since]))
        if until is not None:
            self.add((f"{column} < ?", [until]))

    def sql(self) -> str:
        """The clause to put after WHERE."""
        return " AND ".join(self.clauses) or "1 = 1"
