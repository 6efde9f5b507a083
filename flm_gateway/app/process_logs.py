"""Process logging: human-readable lines by default, JSON lines with `--log-format json`.

mitmproxy logs every client connect and disconnect at INFO; a gateway only
wants its warnings. Secrets never reach a log record: addons log engine and
key names, never header values. As a second line of defence every rendered
record (message and traceback) passes through `redact`, which masks bearer
tokens, `sk-` style keys and the values of credential headers should one ever
slip into a message.

**Client text cannot forge or repaint the log.** Messages quote paths and model
names, so every rendered record passes through `text.printable_lines`: control
characters (ESC, CR, NUL, C1), bidi overrides and bytes that are not UTF-8 are
shown as escapes, line feeds in a message too. A record's message is one line; in
the text format its traceback follows on indented lines, so a line that starts
at column 0 is always a record's own first line. JSON lines are one line per
record by construction (and ASCII: `json.dumps` escapes the rest). A message,
and a traceback, is cut at `MAX_RECORD` characters.

**Repeated records cannot flood the log** (`RepeatLimiter`, on the one handler):
records at WARNING and above are counted per *kind* in windows of
`REPEAT_WINDOW` (60 s). A kind is the logger, level and call site, plus the
message template, or for a record with a traceback the exception type and the
line that raised it (however the message was formatted).
The first `REPEAT_BURST` (10) records of a kind in a window are shown (only the
first with its full traceback, the others with the exception on the same line);
the rest are counted, and one line `N similar message(s) suppressed in the last
Ns: <first line>` is written when the window ends (on the next record after it,
or when logging shuts down). A second budget, `SITE_BURST` (100) per window and
call site, catches messages that differ only by what was formatted into them.
DEBUG and INFO records (the access log among them) are never suppressed.

JSON lines carry `ts` (UTC, ISO 8601), `level`, `logger`, `msg` and, when the
record has them, `request_id`, `listener`, `model`, `engine`, `status`,
`error_kind` and `exc` (the traceback).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TextIO

from flm_gateway.core.text import clip, printable, printable_lines

LOG_FORMATS = ("text", "json")
EXTRA_FIELDS = (
    "request_id",
    "listener",
    "model",
    "engine",
    "status",
    "error_kind",
    "event",
    "worker",
)
MAX_RECORD = 16384
"""Characters of one rendered record (message and traceback) kept."""
REPEAT_MIN_LEVEL = logging.WARNING
REPEAT_WINDOW = 60.0
REPEAT_BURST = 10
SITE_BURST = 100
TRACKED_KINDS = 1024
"""Kinds (and call sites) remembered at once; the oldest is forgotten (and summarised) first."""

_SECRET_PATTERNS = (
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization|x-api-key|api[_-]?key|cookie|set-cookie)"
            r"(\"?\s*[:=]\s*\"?)(?:bearer\s+|basic\s+)?[^\s\"',;]+"
        ),
        r"\1\2[redacted]",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 [redacted]"),
    (re.compile(r"\b(sk|flm)([-_])[A-Za-z0-9_-]{12,}"), r"\1\2[redacted]"),
)


def redact(text: str) -> str:
    """`text` with anything that looks like a credential masked."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _line(text: str) -> str:
    """`text` as a log shows a message: redacted, cut, on one line, controls escaped."""
    return printable(clip(redact(text), MAX_RECORD))


def _lines(text: str) -> str:
    """`text` as a log shows a traceback: like `_line`, but its line feeds and tabs stay."""
    return printable_lines(clip(redact(text), MAX_RECORD))


class TextFormatter(logging.Formatter):
    """`2025-01-31T12:00:00 INFO    flm_gateway: message`, redacted, on one line; a traceback
    follows on indented lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        worker = record.__dict__.get("worker")
        if worker is not None:  # `flm_gateway[worker 2]: ...` (server.workers)
            line = line.replace(f" {record.name}: ", f" {record.name}[worker {worker}]: ", 1)
        return _line(line)

    def format(self, record: logging.LogRecord) -> str:
        return _lines(super().format(record)).replace("\n", "\n    ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _line(record.getMessage()),
        }
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                payload[name] = _line(value) if isinstance(value, str) else value
        if record.exc_info:
            payload["exc"] = _lines(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


# -- repeated records ---------------------------------------------------------


def _raised_at(record: logging.LogRecord) -> tuple[str, str, int] | None:
    """(exception type, file, line) of the innermost frame of the record's traceback."""
    if not record.exc_info or record.exc_info[1] is None:
        return None
    exc = record.exc_info[1]
    tb = exc.__traceback__
    if tb is None:
        return type(exc).__qualname__, "", 0
    while tb.tb_next is not None:
        tb = tb.tb_next
    return type(exc).__qualname__, tb.tb_frame.f_code.co_filename, tb.tb_lineno


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a broken format string: logging reports it when it emits
        return str(record.msg)


def _one_line(record: logging.LogRecord) -> str:
    """The message's first line, and the exception (type and message) if there is one."""
    line = clip(_message(record).split("\n", 1)[0], 200)
    exc = record.exc_info[1] if record.exc_info else None
    return f"{line} [{type(exc).__qualname__}: {clip(str(exc), 200)}]" if exc else line


def _shortened(record: logging.LogRecord) -> logging.LogRecord:
    """`record` on one line (`_one_line`), marked as a repeat."""
    short = logging.makeLogRecord(record.__dict__)
    short.msg = f"{_one_line(record)} (repeated; shown in full once per window)"
    short.args = None
    short.exc_info = short.exc_text = short.stack_info = None
    return short


def _multiline(record: logging.LogRecord) -> bool:
    return record.exc_info is not None or "\n" in _message(record)


@dataclass
class _Window:
    started: float
    shown: int = 0
    suppressed: int = 0
    summary: dict[str, Any] | None = None
    """The summary record's fields, from the first suppressed record (not the record itself:
    its traceback would keep every frame of it alive)."""


class RepeatLimiter:
    """Decides which records are shown (see the module docstring). Thread-safe."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        window: float = REPEAT_WINDOW,
        burst: int = REPEAT_BURST,
        site_burst: int = SITE_BURST,
        tracked: int = TRACKED_KINDS,
    ) -> None:
        self._clock = clock
        self._window = window
        self._limits = (burst, site_burst)
        self._tracked = tracked
        self._lock = threading.Lock()
        # Windows by kind and by call site, oldest first (a new window goes to the end).
        self._windows: tuple[OrderedDict[Hashable, _Window], OrderedDict[Hashable, _Window]] = (
            OrderedDict(),
            OrderedDict(),
        )

    def admit(self, record: logging.LogRecord) -> list[logging.LogRecord]:
        """What to emit now, in order: summaries of ended windows, then `record` unless suppressed
        (without its traceback if its kind was shown before in this window)."""
        if record.levelno < REPEAT_MIN_LEVEL:
            return [record]
        site = (record.name, record.levelno, record.pathname, record.lineno)
        raised = _raised_at(record)
        # With a traceback the error is the kind, however its message was formatted.
        kind = (*site, raised) if raised is not None else (*site, str(record.msg))
        with self._lock:
            now = self._clock()
            out = self._ended(now)
            windows = [
                self._get(table, key, now, out)
                for table, key in zip(self._windows, (kind, site), strict=True)
            ]
            over = next(
                (w for w, limit in zip(windows, self._limits, strict=True) if w.shown >= limit),
                None,
            )
            if over is not None:
                over.suppressed += 1
                if over.summary is None:
                    over.summary = {
                        "name": record.name,
                        "levelno": record.levelno,
                        "levelname": record.levelname,
                        "pathname": record.pathname,
                        "lineno": record.lineno,
                        "msg": "%d similar message(s) suppressed in the last %ds: %s",
                        "sample": _one_line(record),
                    }
                return out
            for window in windows:
                window.shown += 1
            repeated = windows[0].shown > 1
        out.append(_shortened(record) if repeated and _multiline(record) else record)
        return out

    def drain(self) -> list[logging.LogRecord]:
        """Summaries of every window with suppressed records (when logging shuts down)."""
        with self._lock:
            now = self._clock()
            out: list[logging.LogRecord] = []
            for table in self._windows:
                while table:
                    self._close(table.popitem(last=False)[1], now, out)
            return out

    def _get(
        self,
        table: OrderedDict[Hashable, _Window],
        key: Hashable,
        now: float,
        out: list[logging.LogRecord],
    ) -> _Window:
        window = table.get(key)
        if window is None:
            window = table[key] = _Window(now)
            if len(table) > self._tracked:
                self._close(table.popitem(last=False)[1], now, out)
        return window

    def _ended(self, now: float) -> list[logging.LogRecord]:
        out: list[logging.LogRecord] = []
        for table in self._windows:
            while table:
                window = next(iter(table.values()))
                if now - window.started < self._window:
                    break
                self._close(table.popitem(last=False)[1], now, out)
        return out

    @staticmethod
    def _close(window: _Window, now: float, out: list[logging.LogRecord]) -> None:
        if window.summary is None:
            return
        seconds = max(1, round(now - window.started))
        summary = logging.makeLogRecord(window.summary)
        summary.args = (window.suppressed, seconds, window.summary["sample"])
        out.append(summary)


class GatewayLogHandler(logging.StreamHandler[TextIO]):
    """A stream handler whose records pass through a `RepeatLimiter` first."""

    def __init__(self, stream: TextIO, limiter: RepeatLimiter | None = None) -> None:
        super().__init__(stream)
        self.limiter = limiter or RepeatLimiter()

    def handle(self, record: logging.LogRecord) -> bool:
        admitted = self.filter(record)
        if not admitted:
            return False
        if isinstance(admitted, logging.LogRecord):
            record = admitted
        self._emit_all(self.limiter.admit(record))
        return True

    def close(self) -> None:
        try:
            self._emit_all(self.limiter.drain())
        finally:
            super().close()

    def _emit_all(self, records: list[logging.LogRecord]) -> None:
        for item in records:
            self.acquire()
            try:
                self.emit(item)
            finally:
                self.release()


def reported_elsewhere(record: logging.LogRecord) -> bool:
    """mitmproxy's records of a listener that failed to bind: `mitm_listeners.wait_servers`
    reports the failure itself, naming the port and who holds it, and stopping a server
    that never bound logs a bare AssertionError, an empty line."""
    if not record.name.startswith("mitmproxy.addons.proxyserver"):
        return False
    message = record.getMessage()
    return not message.strip() or "failed to listen on" in message


def setup_logging(level: str, log_format: str = "text", worker: int | None = None) -> None:
    """Records on stderr at `level` (debug, info, warning, error) as text or JSON lines;
    a worker of `server.workers` tags each record with its number (`worker`)."""
    handler = GatewayLogHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(lambda record: not reported_elsewhere(record))
    if worker is not None:

        def tag(record: logging.LogRecord) -> bool:
            record.worker = worker
            return True

        handler.addFilter(tag)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    """Change the level of our records (a reload may change `server.log_level`)."""
    logging.getLogger().setLevel(level.upper())
