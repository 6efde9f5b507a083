"""Security events travel with the flow until the `audit` addon writes them.

An addon that notices something calls `record(flow, ...)`; the event lands in
`flm.security.events`. At the end of the flow (`response` or
`error`), `auto_block` counts the events that carry an `offence` and `audit`
writes every event with the flow's client address, key id, request id and
listener filled in. So each addon reports what it saw, once, in one shape.
Text details (a path, a method: what the client sent) are kept through
`text.printable`, so the audit log shows no control character and a byte that
was not UTF-8 as `\xff` (the state store would take any detail anyway, in its
stored form: `flm_gateway.state.stored`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mitmproxy import http

from flm_gateway.core.severity import Severity
from flm_gateway.core.text import printable
from flm_gateway.proxy.flow_meta import SECURITY_EVENTS


class Offence(StrEnum):
    """What auto-block counts."""

    AUTH = "auth"
    INTRUSION = "intrusion"
    HONEYPOT = "honeypot"
    ANOMALY = "anomaly"


@dataclass(frozen=True)
class SecurityEvent:
    type: str
    severity: Severity
    offence: Offence | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def record(
    flow: http.HTTPFlow,
    type_: str,
    severity: Severity,
    offence: Offence | None = None,
    **details: Any,
) -> SecurityEvent:
    """Attach an event to `flow` (text details made printable, see the module docstring)."""
    safe = {name: printable(v) if isinstance(v, str) else v for name, v in details.items()}
    event = SecurityEvent(type_, severity, offence, safe)
    SECURITY_EVENTS.setdefault(flow, []).append(event)
    return event


def events_of(flow: http.HTTPFlow) -> list[SecurityEvent]:
    events: list[SecurityEvent] = SECURITY_EVENTS.get(flow) or []
    return events
