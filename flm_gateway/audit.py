"""Audit events of operations (config reloads, restores), behind one small protocol.

Until the shared state store's audit log is wired in, `LogAudit` writes each
event as a WARNING/INFO record of the `flm_gateway.audit` logger with
`event=<name>` (a field of its own in JSON logs). Event details are plain
strings chosen by the caller and never carry secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

log = logging.getLogger("flm_gateway.audit")


class AuditSink(Protocol):
    def record(self, event: str, outcome: str, details: Mapping[str, str]) -> None:
        """Record `event` (e.g. `config.reload`) with `outcome` (`ok`, `failed`)."""
        ...


class LogAudit:
    """An `AuditSink` that writes to the process log."""

    def record(self, event: str, outcome: str, details: Mapping[str, str]) -> None:
        level = logging.INFO if outcome == "ok" else logging.WARNING
        text = "; ".join(f"{key}={value}" for key, value in details.items())
        suffix = f": {text}" if text else ""
        log.log(level, "audit %s %s%s", event, outcome, suffix, extra={"event": event})
