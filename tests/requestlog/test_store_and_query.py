from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from flm_gateway.observability.flow_summary import FlowSummary, summarize
from flm_gateway.requestlog.log_table import RequestLogStore
from flm_gateway.requestlog.query import (
    FilterError,
    LogFilter,
    parse_time,
    percentile,
    search,
    stats,
)
from tests.ops_flows import routed_flow

NOW = 1_700_000_000.0


def record(**changes: object) -> FlowSummary:
    base = summarize(routed_flow())
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> RequestLogStore:
    store = RequestLogStore.open(tmp_path / "state.db")
    store.insert(
        [
            record(
                started=NOW - 3600, model="a", engine="e1", status=200, latency=0.1, key_id="k1"
            ),
            record(
                started=NOW - 1800, model="a", engine="e1", status=200, latency=0.2, key_id="k1"
            ),
            record(started=NOW - 600, model="a", engine="e2", status=502, latency=0.3, key_id="k2"),
            record(
                started=NOW - 60,
                model="b",
                engine="e2",
                status=None,
                latency=0.4,
                key_id=None,
                client_ip="198.51.100.1",
                path="/v1/embeddings",
            ),
            record(started=NOW - 30, model="b", engine=None, status=404, latency=0.01),
        ]
    )
    return store


def test_database_is_private_and_in_wal_mode(store: RequestLogStore, tmp_path: Path) -> None:
    mode = stat.S_IMODE(os.stat(tmp_path / "state.db").st_mode)
    assert mode == 0o600
    assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_search_filters_combine(store: RequestLogStore) -> None:
    assert [r["status"] for r in search(store, LogFilter(), 10)] == [404, None, 502, 200, 200]
    assert len(search(store, LogFilter(model="a"), 10)) == 3
    assert len(search(store, LogFilter(model="a", engine="e2"), 10)) == 1
    assert len(search(store, LogFilter(status="error"), 10)) == 2
    assert len(search(store, LogFilter(status="2xx"), 10)) == 2
    assert len(search(store, LogFilter(status="404"), 10)) == 1
    assert len(search(store, LogFilter(key="k1"), 10)) == 2
    assert len(search(store, LogFilter(ip="198.51.100.1"), 10)) == 1
    assert len(search(store, LogFilter(path="/v1/emb"), 10)) == 1
    assert len(search(store, LogFilter(since=NOW - 700, until=NOW - 40), 10)) == 2
    assert len(search(store, LogFilter(), 2)) == 2


def test_filter_values_never_become_sql(store: RequestLogStore) -> None:
    assert search(store, LogFilter(model="a' OR 1=1 --"), 10) == []


def test_stats_by_model_engine_key(store: RequestLogStore) -> None:
    result = stats(store, LogFilter(), ["model", "engine", "key"])
    total = result["total"][0]
    assert (total["requests"], total["errors"], total["4xx"]) == (5, 2, 1)
    assert total["error_rate"] == 0.4
    by_model = {g["group"]: g for g in result["model"]}
    assert by_model["a"]["requests"] == 3
    assert by_model["a"]["p50_ms"] == 200.0
    assert by_model["a"]["p99_ms"] == 300.0
    assert {g["group"] for g in result["engine"]} == {"e1", "e2", "-"}
    assert {g["group"] for g in result["key"]} == {"k1", "k2", "-"}


def test_purge_deletes_only_old_records(store: RequestLogStore) -> None:
    assert store.purge(NOW - 1000) == 2
    assert len(search(store, LogFilter(), 10)) == 3


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile([], 0.5) is None


def test_time_and_status_parsing() -> None:
    assert parse_time("1h", now=NOW) == NOW - 3600
    assert parse_time("2023-11-14T22:13:20") == NOW
    assert parse_time("2023-11-14T23:13:20+01:00") == NOW
    with pytest.raises(FilterError):
        parse_time("yesterday")
    with pytest.raises(FilterError):
        LogFilter(status="6xx").where()


NON_UTF8_PATH = b"/v1/\xff\xfe\x1b[2J".decode("utf-8", "surrogateescape")  # as mitmproxy decodes it


def test_hostile_fields_are_stored_escaped_and_bounded(tmp_path: Path) -> None:
    store = RequestLogStore.open(tmp_path / "state.db")
    hostile = record(
        path=NON_UTF8_PATH,
        model="m\x1b]0;owned\x07\u202e" + "x" * 100_000,
        request_id="r\r\n1",
        prompt_tokens=10**30,  # an engine's absurd usage report
    )
    assert store.insert([hostile]) == 0
    (row,) = search(store, LogFilter(), 10)
    assert row["path"] == "/v1/\\xff\\xfe\\x1b[2J"
    assert row["model"].startswith("m\\x1b]0;owned\\x07\\u202exxx") and len(row["model"]) < 300
    assert row["request_id"] == "r\\x0d\\x0a1"
    assert row["prompt_tokens"] is None
    assert all(v.isprintable() for v in row.values() if isinstance(v, str))
    assert search(store, LogFilter(path="/v1/\\xff"), 10) == [row]  # found by what `logs` shows


def test_a_bad_record_costs_only_itself(tmp_path: Path) -> None:
    store = RequestLogStore.open(tmp_path / "state.db")
    batch = [
        record(started=NOW + 1, request_id="before"),
        record(started=NOW + 2, request_id=None),  # type: ignore[arg-type] # NOT NULL refuses it
        record(started=NOW + 3, request_id="hostile", path=NON_UTF8_PATH),
        record(started=NOW + 4, model=object()),  # type: ignore[arg-type] # cannot even be a row
        record(started=NOW + 5, request_id="after"),
    ]
    assert store.insert(batch) == 2
    ids = [r["request_id"] for r in search(store, LogFilter(), 10)]
    assert ids == ["after", "hostile", "before"]


def test_a_database_error_is_raised_not_retried_row_by_row(tmp_path: Path) -> None:
    store = RequestLogStore.open(tmp_path / "state.db")
    store.connection.execute("DROP TABLE request_log")
    with pytest.raises(sqlite3.OperationalError):
        store.insert([record(), record()])
