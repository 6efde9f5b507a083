"""The audit log's gateway side: every security event of a flow, and config loads.

Policy: on `response` and `error` (last in the chain, after `auto_block`),
each event other addons attached to the flow (`flm.security.events`) is queued
for the hash-chained audit log (`StateService.audit`, written in the
background) with the time, client address, key id, request id and listener.
Secrets and header values are never part of an event. To keep a noisy client
from flooding the log, at most `MAX_PER_CLIENT` events per client address and
event type are written per minute; the rest are counted and summarised in one
`audit.suppressed` event when that client's minute ends. On every
`apply_config` (start and each reload) a `config.loaded` event records the file
and the SHA-256 of its text. Admin actions (keys, block list) are audited by the
CLI commands that perform them.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed
from flm_gateway.config import LoadedConfig
from flm_gateway.config.security import Severity
from flm_gateway.security.events import EVENTS_KEY, events_of
from flm_gateway.security.policies import client_ip, listener_name
from flm_gateway.state.service import StateService
from flm_gateway.state.store import AuditEvent

MAX_PER_CLIENT = 60
FLOOD_WINDOW = 60.0
MAX_TRACKED = 20_000


class Audit:
    def __init__(self, state: StateService, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._clock = clock
        self._windows: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def apply_config(self, loaded: LoadedConfig) -> None:
        self._state.audit(
            AuditEvent(
                "config.loaded",
                Severity.INFO,
                actor="gateway",
                details={
                    "file": loaded.display_name,
                    "sha256": hashlib.sha256(loaded.source.encode()).hexdigest(),
                    "listeners": [listener.name for listener in loaded.config.listeners],
                },
            )
        )

    def admit(self, ip: str, type_: str, now: float) -> bool:
        """Whether this client's event of `type_` is written (the flood limit)."""
        key = (ip, type_)
        start, count = self._windows.get(key, (now, 0))
        if now - start >= FLOOD_WINDOW:
            if count > MAX_PER_CLIENT:
                self._state.audit(
                    AuditEvent(
                        "audit.suppressed",
                        Severity.LOW,
                        ts=now,
                        ip=ip,
                        actor="gateway",
                        details={"type": type_, "suppressed": count - MAX_PER_CLIENT},
                    )
                )
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        self._windows.move_to_end(key)
        if len(self._windows) > MAX_TRACKED:
            self._windows.popitem(last=False)
        return count <= MAX_PER_CLIENT

    def _finish(self, flow: http.HTTPFlow) -> None:
        events = events_of(flow)
        if not events:
            return
        flow.metadata[EVENTS_KEY] = []
        now = self._clock()
        ip = client_ip(flow)
        status = flow.response.status_code if flow.response is not None else None
        for event in events:
            if not self.admit(ip, event.type, now):
                continue
            details = dict(event.details)
            details["status"] = status
            self._state.audit(
                AuditEvent(
                    event.type,
                    event.severity,
                    ts=now,
                    ip=ip,
                    key_id=flow.metadata.get("flm.auth.key_id"),
                    request_id=flow.metadata.get("flm.request_id"),
                    listener=listener_name(flow),
                    actor="gateway",
                    details=details,
                )
            )

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)
