"""The audit anchor: the log's head, written outside the store to an append-only file.

One JSON object per line, `{"seq": N, "hash": H, "ts": T, "by": WRITER, "mac": M}`:
"at time T the audit log held N records and record N had hash H", written by
`by` (`gateway:<pid>`, `cli:<user>`) and MAC'd with the audit key
(`AuditKey.mac("anchor", ...)`), so nobody without the key can add a line that
verifies. A log cut short, emptied or swapped for an older copy no longer
holds what the anchor says; `flm_gateway.state.verify` reports exactly that.

Writing (`AnchorFile`, owned by the store of each writer): after each append
the store calls `note(head)`. The line is written at once when the last one is
older than `interval` (1 s), otherwise by `flush()` once that second is over
(the gateway flushes every `state.refresh_interval` and at shutdown; a CLI
command when it closes the store). So the file trails the log by about a
second at most, and grows by at most one line (~200 bytes) a second while
events are written. Each line is one `write()` on a descriptor opened
`O_APPEND | O_CREAT` (0600) for that line, then fdatasync'd: a file replaced
by a rename is followed, and an append-only file (`chattr +a`) keeps working.
A failed write is logged and retried by the next flush; it never fails the
append (the records are already durable).

Reading (`read_anchor_file`, `last_anchor`): lines that do not parse, or whose
MAC does not verify, are problems: the file was edited.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flm_gateway.state.chain import AuditKey, MacCheck, fingerprint_of
from flm_gateway.state.store import AuditHead, canonical_json

log = logging.getLogger("flm_gateway.state")

ANCHOR_INTERVAL = 1.0
TAIL_BYTES = 16384
"""How much of the file's end `last_anchor` reads (many lines; the file may be large)."""


@dataclass(frozen=True)
class Anchor:
    """A head the log must still hold: record `seq`, with `hash` when known."""

    seq: int
    hash: str | None
    source: str
    """Where it comes from, for messages: `audit.anchor line 42 (gateway:7, 2025-...)`."""


@dataclass
class AnchorReading:
    """Every anchor of a file, and what is wrong with the file."""

    path: Path
    anchors: list[Anchor] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    exists: bool = True


def _mac_text(seq: int, hash_: str, ts: float, by: str) -> str:
    return canonical_json([seq, hash_, ts, by])


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AnchorFile:
    """Appends anchors for one writer (see the module docstring). Not thread-safe: used
    from the one thread that uses its store."""

    def __init__(
        self,
        path: Path,
        key: AuditKey | None,
        writer: str,
        interval: float = ANCHOR_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._key = key
        self._writer = writer
        self._interval = interval
        self._clock = clock
        self._last_write: float | None = None
        self._pending: AuditHead | None = None
        self._failing = False

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def note(self, head: AuditHead) -> None:
        """The log's head after an append: written now, or by the next `flush`."""
        self._pending = head
        if self._last_write is None or self._clock() - self._last_write >= self._interval:
            self.flush()

    def flush(self) -> None:
        """Write the pending head, if any."""
        head = self._pending
        if head is None:
            return
        ts = round(time.time(), 3)
        line: dict[str, Any] = {"seq": head.seq, "hash": head.hash, "ts": ts, "by": self._writer}
        line["mac"] = (
            self._key.mac("anchor", _mac_text(head.seq, head.hash, ts, self._writer))
            if self._key is not None
            else None
        )
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._failing:
                log.error("cannot write the audit anchor %s (will retry): %s", self.path, exc)
            self._failing = True
            return
        if self._failing:
            log.warning("audit anchor %s written again", self.path)
        self._failing = False
        self._pending = None
        self._last_write = self._clock()


def _parse(text: str, where: str, key: AuditKey | None) -> Anchor | str:
    """The anchor in line `text` (`where` names it), or what is wrong with it."""
    try:
        data = json.loads(text)
        seq, hash_, ts, by = data["seq"], data["hash"], data["ts"], data["by"]
        mac = data.get("mac")
        if not (
            isinstance(seq, int)
            and seq >= 0
            and isinstance(hash_, str)
            and isinstance(ts, int | float)
            and isinstance(by, str)
        ):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return f"{where} is not an anchor (the file was edited)"
    if key is not None:
        check = key.check("anchor", _mac_text(seq, hash_, ts, by), mac)
        if check is MacCheck.MISSING:
            return f"{where} has no MAC: it was not written by a keyed writer (forged)"
        if check is MacCheck.OTHER_KEY:
            return (
                f"{where} was keyed with another key (fingerprint {fingerprint_of(mac)}, "
                f"this key is {key.fingerprint})"
            )
        if check is MacCheck.BAD:
            return f"{where}: its MAC does not match (the line was edited or forged)"
    return Anchor(seq, hash_, f"{where} ({by}, {_when(float(ts))})")


def read_anchor_file(path: Path, key: AuditKey | None) -> AnchorReading:
    """Every anchor in `path` (a missing file is no anchor, not an error)."""
    reading = AnchorReading(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        reading.exists = False
        return reading
    except OSError as exc:
        reading.problems.append(f"cannot read the anchor file {path}: {exc.strerror}")
        return reading
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" after a final newline; else a line cut short by a crash
    for number, raw in enumerate(lines, 1):
        parsed = _parse(raw.decode("utf-8", "replace"), f"{path.name} line {number}", key)
        if isinstance(parsed, Anchor):
            reading.anchors.append(parsed)
        else:
            reading.problems.append(parsed)
    if torn:
        log.debug("%s: ignoring an unfinished last line", path)
    return reading


def last_anchor(path: Path, key: AuditKey | None) -> Anchor | str | None:
    """The newest complete anchor of `path` (None: no file, no line, or unreadable: logged),
    or what is wrong with that line. Reads only the file's end, for the gateway's check at
    start."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            handle.seek(start)
            tail = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read the audit anchor %s: %s", path, exc.strerror)
        return None
    lines = tail.split(b"\n")
    lines.pop()  # after the last newline: empty, or unfinished
    if start > 0 and lines:
        lines.pop(0)  # probably cut by the seek
    if not lines:
        return None
    return _parse(lines[-1].decode("utf-8", "replace"), f"{path.name} (last line)", key)
