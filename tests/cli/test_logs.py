"""`flm-gateway logs`: stored client text is shown without raw control characters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from flm_gateway.cli import main
from flm_gateway.observability.flow_summary import summarize
from flm_gateway.requestlog.log_table import COLUMNS, RequestLogStore, row_of
from tests.ops_flows import routed_flow

CONFIG = 'server: {state_dir: ./state}\nlisteners: [{name: main, bind: "127.0.0.1:8088"}]\n'
RAW = "/v1/\x1b[2J\x1b]0;owned\x07\r\nforged\u202eevil\x9b31m"
UNSAFE = ("\x1b", "\x07", "\r", "\n", "\u202e", "\x9b")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "flm.yaml"
    path.write_text(CONFIG)
    store = RequestLogStore.open(tmp_path / "state" / "state.db")
    summary = summarize(routed_flow())
    store.insert([dataclasses.replace(summary, request_id="stored", path=RAW, model=RAW)])
    # a row as an older version stored it: raw, unescaped
    row = list(row_of(dataclasses.replace(summary, request_id="older")))
    row[COLUMNS.index("path")] = RAW
    placeholders = ", ".join("?" for _ in COLUMNS)
    with store.connection:
        store.connection.execute(
            f"INSERT INTO request_log ({', '.join(COLUMNS)}) VALUES ({placeholders})",
            row,
        )
    store.close()
    return path


def test_table_shows_escapes_only(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 3  # header and two records, each on its own line
    assert all(char not in out.replace("\n", "") for char in UNSAFE)
    assert (
        sum(
            "/v1/\\x1b[2J\\x1b]0;owned\\x07\\x0d\\x0aforged\\u202eevil\\x9b31m" in line
            for line in lines
        )
        == 2
    )


def test_json_is_ascii(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and "\x1b" not in out
    records = {r["request_id"]: r for r in json.loads(out)}
    assert (
        records["stored"]["path"]
        == "/v1/\\x1b[2J\\x1b]0;owned\\x07\\x0d\\x0aforged\\u202eevil\\x9b31m"
    )
    assert records["older"]["path"] == RAW  # JSON carries the stored value, escaped by JSON
