"""The anchor file: keyed lines, at most one a second, followed across renames, edits reported."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from flm_gateway.state.anchor import AnchorFile, last_anchor, read_anchor_file
from flm_gateway.state.chain import AuditKey
from flm_gateway.state.store import AuditHead

KEY = AuditKey.derive("a" * 40)
OTHER = AuditKey.derive("b" * 40)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def head(seq: int) -> AuditHead:
    return AuditHead(seq, f"{seq:064x}")


def test_at_most_one_line_per_interval_and_the_rest_on_flush(tmp_path: Path) -> None:
    clock = Clock()
    anchor = AnchorFile(tmp_path / "a" / "audit.anchor", KEY, "gateway:1", 1.0, clock)
    anchor.note(head(1))  # the first: at once
    anchor.note(head(2))
    anchor.note(head(3))  # within the second: pending, the newest wins
    assert anchor.pending
    reading = read_anchor_file(anchor.path, KEY)
    assert [a.seq for a in reading.anchors] == [1]
    clock.now += 1.0
    anchor.note(head(4))  # the second is over: written, with what was pending folded in
    anchor.note(head(5))
    anchor.flush()
    assert not anchor.pending
    reading = read_anchor_file(anchor.path, KEY)
    assert reading.problems == [] and [a.seq for a in reading.anchors] == [1, 4, 5]
    assert reading.anchors[0].source.startswith("audit.anchor line 1 (gateway:1, ")
    assert anchor.path.stat().st_mode & 0o777 == 0o600
    assert anchor.path.parent.stat().st_mode & 0o777 == 0o700


def test_a_replaced_file_is_followed(tmp_path: Path) -> None:
    anchor = AnchorFile(tmp_path / "audit.anchor", KEY, "w", 0.0)
    anchor.note(head(1))
    os.rename(anchor.path, tmp_path / "moved")
    anchor.note(head(2))
    assert [a.seq for a in read_anchor_file(anchor.path, KEY).anchors] == [2]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: {**d, "seq": d["seq"] + 1}, "its MAC does not match"),
        (lambda d: {**d, "hash": "0" * 64}, "its MAC does not match"),
        (lambda d: {**d, "ts": d["ts"] + 1}, "its MAC does not match"),
        (lambda d: {**d, "mac": None}, "has no MAC"),
        (lambda d: {k: v for k, v in d.items() if k != "mac"}, "has no MAC"),
        (lambda d: {**d, "mac": OTHER.mac("anchor", "x")}, "keyed with another key"),
        (lambda d: {**d, "seq": "7"}, "is not an anchor"),
        (lambda d: {**d, "seq": -1}, "is not an anchor"),
        (lambda d: [d], "is not an anchor"),
    ],
)
def test_edited_or_forged_lines_are_problems(tmp_path: Path, edit: object, problem: str) -> None:
    path = tmp_path / "audit.anchor"
    AnchorFile(path, KEY, "w", 0.0).note(head(3))
    line = json.loads(path.read_text())
    path.write_text(json.dumps(edit(line)) + "\n")  # type: ignore[operator]
    reading = read_anchor_file(path, KEY)
    assert reading.anchors == [] and len(reading.problems) == 1
    assert reading.problems[0].startswith("audit.anchor line 1")
    assert problem in reading.problems[0]
    assert isinstance(last_anchor(path, KEY), str)


def test_a_line_forged_with_another_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.anchor"
    AnchorFile(path, OTHER, "attacker", 0.0).note(head(9))
    reading = read_anchor_file(path, KEY)
    assert "keyed with another key" in reading.problems[0]


def test_garbage_and_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.anchor"
    anchor = AnchorFile(path, KEY, "w", 0.0)
    anchor.note(head(1))
    with path.open("ab") as handle:
        handle.write(b"\xff\xfe not json\n")
    anchor.note(head(2))
    with path.open("ab") as handle:
        handle.write(b'{"seq": 3, "ha')  # a crash in the middle of a write
    reading = read_anchor_file(path, KEY)
    assert [a.seq for a in reading.anchors] == [1, 2]
    assert reading.problems == ["audit.anchor line 2 is not an anchor (the file was edited)"]
    newest = last_anchor(path, KEY)
    assert not isinstance(newest, str) and newest is not None and newest.seq == 2


def test_last_anchor_reads_only_the_end_of_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.anchor"
    anchor = AnchorFile(path, KEY, "w", 0.0)
    for seq in range(1, 400):
        anchor.note(head(seq))
    assert path.stat().st_size > 16384
    newest = last_anchor(path, KEY)
    assert not isinstance(newest, str) and newest is not None
    assert (newest.seq, newest.hash) == (399, head(399).hash)
    assert last_anchor(tmp_path / "missing", KEY) is None
    assert read_anchor_file(tmp_path / "missing", KEY).exists is False


def test_a_failed_write_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory should be")
    anchor = AnchorFile(blocked / "audit.anchor", KEY, "w", 0.0)
    with caplog.at_level(logging.ERROR, "flm_gateway.state"):
        anchor.note(head(1))
        anchor.note(head(2))
    assert caplog.text.count("cannot write the audit anchor") == 1
    assert anchor.pending
    blocked.unlink()
    anchor.flush()
    assert [a.seq for a in read_anchor_file(anchor.path, KEY).anchors] == [2]
