"""Answer 504 when an engine accepts a request but sends no response headers in time.

Policy: when a routed flow is forwarded (`request`, after every other request
hook), a timer of the engine's `timeouts.response` starts; response headers or
an error stop it. When it fires, the client gets 504 `engine_timeout` in
OpenAI's error shape and the upstream connection is closed. mitmproxy has no
per-request upstream timeout, so the answer is handed to its HTTP layer as if
the engine had sent it (`Connection: close` makes mitmproxy drop that upstream
connection): the flow then ends through the normal response hooks, so logs and
metrics see it like any other 504, or `failover` retries it (reason `timeout`).
On `flm_failover` the timer starts again for the engine the request goes to next;
a timer of an earlier attempt that fires late is ignored (`flm.failover.attempt`).
Writes `flm.upstream.timed_out`.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, http
from mitmproxy.proxy import events

from flm_gateway.core.errors import error_body
from flm_gateway.proxy.addon_contract import ReadsEngines
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    FAILOVER_ATTEMPT,
    FAILOVER_RESEND,
    ROUTE_ENGINE,
    UPSTREAM_TIMED_OUT,
)

log = logging.getLogger("flm_gateway.addons")


def timeout_response_bytes(engine: str, seconds: float) -> bytes:
    """A complete HTTP/1.1 504 response, as an engine would send it."""
    body = error_body(
        504,
        f"Engine {engine!r} did not answer within {seconds:g}s.",
        code="engine_timeout",
    )
    head = (
        "HTTP/1.1 504 Gateway Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class ResponseTimeout(ReadsEngines):
    def __init__(self) -> None:
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        self._start(flow)

    @fail_closed()
    def flm_failover(self, flow: http.HTTPFlow) -> None:
        self._stop(flow)
        if FAILOVER_RESEND.get(flow):
            self._start(flow)

    def _start(self, flow: http.HTTPFlow) -> None:
        engine_name = ROUTE_ENGINE.get(flow)
        if flow.response is not None or engine_name is None or self._directory is None:
            return
        engine = self._directory.engines.get(engine_name)
        if engine is None:
            return
        seconds = engine.config.timeouts.response
        attempt = FAILOVER_ATTEMPT.get(flow)
        self._stop(flow)
        self._timers[flow.id] = asyncio.get_running_loop().call_later(
            seconds, self._expire, flow, engine_name, seconds, attempt
        )

    def _stop(self, flow: http.HTTPFlow) -> None:
        timer = self._timers.pop(flow.id, None)
        if timer is not None:
            timer.cancel()

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._stop(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._stop(flow)

    def _expire(
        self, flow: http.HTTPFlow, engine: str, seconds: float, attempt: int | None
    ) -> None:
        self._timers.pop(flow.id, None)
        handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
        if (
            handler is None
            or flow.response is not None
            or not flow.server_conn.connected
            or FAILOVER_ATTEMPT.get(flow) != attempt
        ):
            return
        log.warning("engine %s sent no response headers within %gs", engine, seconds)
        UPSTREAM_TIMED_OUT.set(flow, True)  # failover counts it (passive health)
        event = events.DataReceived(flow.server_conn, timeout_response_bytes(engine, seconds))
        asyncio.get_running_loop().create_task(handler.server_event(event))
