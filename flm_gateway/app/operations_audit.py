"""Audit events of operations (config reloads), behind one small protocol.

`StateAudit` queues each event into the state store's hash-chained audit log
(`StateService.audit`, written off the event loop) as type `<event>.<outcome>`
(`config.reload.ok`, `config.reload.failed`) with actor `gateway`, and also
logs it (logger `flm_gateway.audit`, `event=<type>` in JSON logs) so it is
visible before the store flushes. `LogAudit` only logs (for tools without a
state store). Details are plain strings chosen by the caller, never secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from flm_gateway.core.severity import Severity
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import AuditEvent

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
        log.log(
            level, "audit %s %s%s", event, outcome, suffix, extra={"event": f"{event}.{outcome}"}
        )


class StateAudit(LogAudit):
    """An `AuditSink` that writes to the state store's audit log, and logs."""

    def __init__(self, state: StateService) -> None:
        self._state = state

    def record(self, event: str, outcome: str, details: Mapping[str, str]) -> None:
        super().record(event, outcome, details)
        severity = Severity.INFO if outcome == "ok" else Severity.MEDIUM
        self._state.audit(
            AuditEvent(
                type=f"{event}.{outcome}", severity=severity, actor="gateway", details=dict(details)
            )
        )
