"""The audit log's gateway side: every security event of a flow, durable before its answer.

Policy: each event other addons attached to the flow (`flm.security.events`)
is written once to the hash-chained, keyed audit log with the time, client
address, key id, request id, listener and the answer's status, and the hook
that writes it awaits its group commit (`StateService.commit_audit`):
- on `response` (last in the chain, after `auto_block`): an answer the gateway
  makes itself (401, 403, 429, ...) or a buffered engine answer is sent only
  once its events are durable;
- on `responseheaders` for a streamed answer, before its headers are sent;
  events added after that (`auto_block`'s `ip.blocked`, anomalies) are written
  on `response`;
- on `error`, for flows that end without an answer.
Flows without events return at once: no await, no store call.

Fail closed: if the commit fails or takes longer than `COMMIT_TIMEOUT` (3s),
the answer becomes 503 `security_state_unavailable` with Retry-After (what
`ip_filter` answers while the store is unusable) and a stream is cut; the
events stay queued and are written when the store answers again.

Flood limit: at most `MAX_PER_CLIENT` events per client address and event type
are written per minute, so a flood is never slowed by the log beyond that: a
flow whose events are all over the limit does not wait. The rest are counted
and summarised in one `audit.suppressed` event per client, type and minute,
written in the background (not awaited) when the minute ends (noticed by that
client's next event, or by a sweep every `SWEEP_INTERVAL`), when the client is
evicted from tracking, and at shutdown; a kill -9 loses the counts of minutes
not yet summarised.

On every commit of a config (start and each reload) a `config.loaded` event records
the file and the SHA-256 of its text. Admin actions (keys, block list) are
audited by the CLI commands that perform them. Secrets and header values are
never part of an event. Reads `flm.security.events`, `flm.auth.key_id`,
`flm.request_id`; writes `flm.audit.written` (how many of the flow's events
are written).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mitmproxy import http

from flm_gateway.core.errors import error_response
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.background import BackgroundTask
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import AUDIT_WRITTEN, AUTH_KEY_ID, REQUEST_ID, SECURITY_EVENTS
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.events import events_of
from flm_gateway.security.policies import client_ip, listener_name
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import AuditEvent, StateError

log = logging.getLogger("flm_gateway.audit")

MAX_PER_CLIENT = 60
FLOOD_WINDOW = 60.0
MAX_TRACKED = 20_000
SWEEP_INTERVAL = 10.0
RETRY_AFTER_UNAVAILABLE = "5"

Window = tuple[float, int]
"""When a client's minute for one event type started, and how many events it had."""


class Audit:
    def __init__(self, state: StateService, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._clock = clock
        self._windows: OrderedDict[tuple[str, str], Window] = OrderedDict()
        self._flooding: set[tuple[str, str]] = set()
        """Windows past the limit: the ones with a summary to write."""
        self._sweeper = BackgroundTask("flm-audit-sweep", self._sweep_loop)
        state.before_stop(self.summarise_all)

    def prepare(self, runtime: Runtime) -> AuditEvent:
        loaded = runtime.loaded
        return AuditEvent(
            "config.loaded",
            Severity.INFO,
            actor="gateway",
            details={
                "file": loaded.display_name,
                "sha256": hashlib.sha256(loaded.source.encode()).hexdigest(),
                "listeners": [listener.name for listener in loaded.config.listeners],
            },
        )

    def commit(self, prepared: AuditEvent) -> None:
        self._state.audit(prepared)

    def running(self) -> None:
        self._sweeper.start()

    async def done(self) -> None:
        await self._sweeper.stop()

    # -- the flood limit ------------------------------------------------------

    def admit(self, ip: str, type_: str, now: float) -> bool:
        """Whether this client's event of `type_` is written (the flood limit)."""
        key = (ip, type_)
        start, count = self._windows.get(key, (now, 0))
        if now - start >= FLOOD_WINDOW:
            self._summarise(key, start, count)
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        self._windows.move_to_end(key)
        if count == MAX_PER_CLIENT + 1:
            self._flooding.add(key)
        if len(self._windows) > MAX_TRACKED:
            evicted, (evicted_start, evicted_count) = self._windows.popitem(last=False)
            self._summarise(evicted, evicted_start, evicted_count)
        return count <= MAX_PER_CLIENT

    def _summarise(self, key: tuple[str, str], start: float, count: int) -> None:
        """Queue the `audit.suppressed` summary of a window that is over."""
        self._flooding.discard(key)
        if count <= MAX_PER_CLIENT:
            return
        ip, type_ = key
        self._state.audit(
            AuditEvent(
                "audit.suppressed",
                Severity.LOW,
                ts=self._clock(),
                ip=ip,
                actor="gateway",
                details={
                    "type": type_,
                    "suppressed": count - MAX_PER_CLIENT,
                    "since": start,
                },
            )
        )

    def sweep(self) -> int:
        """Summarise the flooding windows whose minute is over; how many."""
        now = self._clock()
        ended = [key for key in self._flooding if now - self._windows[key][0] >= FLOOD_WINDOW]
        for key in ended:
            self._summarise(key, *self._windows.pop(key))
        return len(ended)

    def summarise_all(self) -> None:
        """Summarise every flooding window now (at shutdown: what was counted so far)."""
        for key in list(self._flooding):
            self._summarise(key, *self._windows.pop(key))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    # -- the flow's events ------------------------------------------------------

    def _unwritten(self, flow: http.HTTPFlow) -> list[AuditEvent]:
        """The flow's events not written yet and within the flood limit, as audit events."""
        events = events_of(flow)
        written: int = AUDIT_WRITTEN.get(flow, 0)
        if len(events) <= written:
            return []
        AUDIT_WRITTEN.set(flow, len(events))
        now = self._clock()
        ip = client_ip(flow)
        status = flow.response.status_code if flow.response is not None else None
        return [
            AuditEvent(
                event.type,
                event.severity,
                ts=now,
                ip=ip,
                key_id=AUTH_KEY_ID.get(flow),
                request_id=REQUEST_ID.get(flow),
                listener=listener_name(flow),
                actor="gateway",
                details={**event.details, "status": status},
            )
            for event in events[written:]
            if self.admit(ip, event.type, now)
        ]

    async def _commit(self, flow: http.HTTPFlow, events: list[AuditEvent], hook: str) -> None:
        try:
            await self._state.commit_audit(events)
        except StateError as exc:
            if flow.response is None:
                action = "no answer to hold"  # `error`
            elif not flow.response.stream:
                action = "answering 503"
                flow.response = error_response(
                    503,
                    "The gateway's security state is unavailable; retry shortly.",
                    code="security_state_unavailable",
                    headers={"retry-after": RETRY_AFTER_UNAVAILABLE},
                )
            elif hook == "responseheaders":
                action = "the stream is cut before it starts"
                flow.kill()
            else:
                action = "the stream was already sent"
            log.error(
                "audit events of request %s are not durable yet (%s; they stay queued): %s",
                REQUEST_ID.get(flow),
                exc,
                action,
            )

    def _write(self, flow: http.HTTPFlow, hook: str) -> Awaitable[None] | None:
        if not SECURITY_EVENTS.get(flow):
            return None
        events = self._unwritten(flow)
        return self._commit(flow, events, hook) if events else None

    @fail_closed(503)
    def responseheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response is None or not flow.response.stream:
            return None
        return self._write(flow, "responseheaders")

    @fail_closed(503)
    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._write(flow, "response")

    def error(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._write(flow, "error")
