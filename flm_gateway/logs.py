"""Process logging: human-readable lines by default, JSON lines with `--log-format json`.

mitmproxy logs every client connect and disconnect at INFO; a gateway only
wants its warnings. Secrets never reach a log record: addons log engine and
key names, never header values. As a second line of defence every rendered
record (message and traceback) passes through `redact`, which masks bearer
tokens, `sk-` style keys and the values of credential headers should one ever
slip into a message.

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
from typing import Any

LOG_FORMATS = ("text", "json")
EXTRA_FIELDS = ("request_id", "listener", "model", "engine", "status", "error_kind", "event")

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


class TextFormatter(logging.Formatter):
    """`2025-01-31T12:00:00 INFO    flm_gateway: message`, redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                payload[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Records on stderr at `level` (debug, info, warning, error) as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    """Change the level of our records (a reload may change `server.log_level`)."""
    logging.getLogger().setLevel(level.upper())
