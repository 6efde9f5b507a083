"""flm_gateway.core.sql_where: the WHERE clause the request log and the audit log share."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from flm_gateway.core.sql_where import Where, any_of, one_of, starts_with


def test_no_condition_matches_every_row() -> None:
    where = Where()
    assert (where.sql(), where.params) == ("1 = 1", [])


def test_unset_filters_add_no_condition() -> None:
    where = Where()
    where.time_range("ts", None, None)
    where.equals("model", None)
    assert (where.sql(), where.params) == ("1 = 1", [])


def test_conditions_combine_with_and_in_order() -> None:
    where = Where()
    where.time_range("ts", 10.0, 20.0)
    where.equals("model", "m")
    where.add(starts_with("path", "/v1/"))
    assert where.sql() == "ts >= ? AND ts < ? AND model = ? AND substr(path, 1, ?) = ?"
    assert where.params == [10.0, 20.0, "m", 4, "/v1/"]


def test_any_of_and_one_of() -> None:
    assert any_of([("a = ?", [1]), starts_with("b", "x.")]) == (
        "(a = ? OR substr(b, 1, ?) = ?)",
        [1, 2, "x."],
    )
    assert one_of("severity", ["high", "critical"]) == ("severity IN (?, ?)", ["high", "critical"])


ROWS = [
    (1.0, "/v1/chat", "intrusion.path", "low"),
    (2.0, "/v1/models", "anomaly.rate", "high"),
    (3.0, "/api/tags", "key.created", "critical"),
    (4.0, "/v1%", "intrusion.header", "high"),
]


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda w: w.time_range("ts", 2.0, 4.0), [2.0, 3.0]),
        (lambda w: w.add(starts_with("path", "/v1/")), [1.0, 2.0]),
        # No LIKE: `%` and `_` in a user's prefix are literal characters.
        (lambda w: w.add(starts_with("path", "/v1%")), [4.0]),
        (lambda w: w.add(starts_with("path", "/v_")), []),
        (
            lambda w: w.add(
                any_of([starts_with("type", "anomaly."), ("type = ?", ["key.created"])])
            ),
            [2.0, 3.0],
        ),
        (lambda w: w.add(one_of("severity", ["high", "critical"])), [2.0, 3.0, 4.0]),
        (lambda w: w.equals("type", "intrusion.path' OR '1'='1"), []),
    ],
)
def test_the_clause_selects_the_right_rows_in_sqlite(
    build: Callable[[Where], None], expected: list[float]
) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (ts REAL, path TEXT, type TEXT, severity TEXT)")
    db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", ROWS)
    where = Where()
    build(where)
    rows = db.execute(f"SELECT ts FROM t WHERE {where.sql()} ORDER BY ts", where.params)
    assert [ts for (ts,) in rows] == expected
    db.close()
