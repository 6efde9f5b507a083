"""Failover inside mitmproxy's HTTP stream: a request re-sent before its answer began.

mitmproxy forwards a flow once: a connect failure, a connection the engine closed
before answering, or a 5xx becomes the client's answer. `FailoverHttpStream` keeps a
flow alive through these, as long as nothing of an answer reached the client yet:

- **When.** The flow's request body is complete and buffered (never a streamed
  upload), `flm.failover.possible` (the set of reasons the failover addon allows
  for this flow) is set, and the engine failed in one of these ways before the
  first byte was sent to the client:
  - `connect`: mitmproxy could not open the connection (refused, reset, timeout,
    an egress failure);
  - `disconnected`: the connection closed, or sent something that is not HTTP,
    before the response head (with `flm.failover.reused` when it was a reused
    keep-alive connection: a stale one, not necessarily a dead engine);
  - `5xx`: a response head with status >= 500; its body (at most `HOLD_LIMIT`
    bytes, within `HOLD_TIMEOUT` seconds) is held, not sent;
  - `timeout`: the response-timeout addon's 504 (`flm.upstream.timed_out`), held
    like a 5xx.
- **What.** It sets `flm.failover.reason` and fires the `flm_failover` hook
  (`FailoverHook`). The failover addon picks the next candidate and rewrites the
  request for it; the addons after it re-apply their per-engine work (egress,
  engine slot, response timer, usage). Then, in this order:
  - an addon answered (`flow.response` set: every candidate failed, or a busy
    engine): that answer is sent, through the usual response hooks;
  - `flm.failover.resend` is set: the buffered request goes out again on a new
    connection, and the client still sees one answer, streamed if the engine
    streams it;
  - else the held 5xx (or timeout) is released as the answer, or mitmproxy's own
    error (rendered by `mitm_errors`) is sent.
- **The first byte** of a streamed answer is its first body event: the head of a
  stream is held until then (a client waits for the first token anyway), so an engine
  that dies between its head and its first token is failed over like one that died
  before answering (`disconnected`).
- **After the first byte** nothing is retried. A Server-Sent Events answer of an
  API call cut mid-way gets one last event, `data: {"error": {...,"code":
  "stream_interrupted"}}`, when what was sent ended on an event boundary (a partial
  event would corrupt it), then the connection closes without the closing chunk,
  so the client's HTTP library reports the cut too.

`flm.upstream.answered` is set once an engine's response head arrives (the
failover addon counts engine successes and failures by it) and cleared on a
re-send. Uses mitmproxy internals pinned by `tests/test_mitm_failover.py`: the
stream's states, `make_server_connection` and the parent `HttpLayer.connections`
(a connection whose connect failed is removed, else mitmproxy would answer every
later request for that address with the same error).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, http
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
    ResponseTrailers,
)
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

from flm_gateway.proxy.api_kind import ApiKind
from flm_gateway.proxy.flow_meta import (
    API_KIND,
    FAILOVER_ERROR,
    FAILOVER_HOLD_TIMEOUT,
    FAILOVER_POSSIBLE,
    FAILOVER_REASON,
    FAILOVER_RESEND,
    FAILOVER_REUSED,
    STREAM_INTERRUPTED,
    UPSTREAM_ANSWERED,
    UPSTREAM_TIMED_OUT,
)

HOLD_LIMIT = 64 * 1024
"""Bytes of a 5xx body held while deciding on a retry; a larger one is the answer."""
HOLD_TIMEOUT = 10.0
"""Seconds a held 5xx body may take to arrive (at most; `flm.failover.hold_timeout` may
say less): a stalled one counts as a timeout."""


CONNECT = "connect"
DISCONNECTED = "disconnected"
HTTP_5XX = "5xx"
TIMEOUT = "timeout"

_SSE = "text/event-stream"
_DETACHED = -1  # a stream id no stream has: mitmproxy drops events for unknown streams


@dataclass
class FailoverHook(commands.StartHook):
    """An engine failed a flow before its answer began (`flm.failover.reason` says how).

    Addons may rewrite the request for another engine and set `flm.failover.resend`,
    or answer the flow. mitmproxy passes hooks exactly one argument."""

    name = "flm_failover"
    flow: http.HTTPFlow


def stream_interrupted_event() -> bytes:
    """The last Server-Sent Event of a stream the engine cut, in OpenAI's error shape."""
    error = {
        "error": {
            "message": "The engine closed the stream before it was complete.",
            "type": "server_error",
            "param": None,
            "code": "stream_interrupted",
        }
    }
    return b"data: " + json.dumps(error).encode() + b"\n\n"


class FailoverHttpStream(http_layers.HttpStream):
    """mitmproxy's HTTP stream, able to send a flow's request again (see the module)."""

    _held: bytearray | None = None
    _hold_wakeup: commands.RequestWakeup | None = None
    _sent_tail: bytes = b"\r\n\r\n"  # the last bytes of a streamed answer sent to the client
    _head_pending = False  # a streamed answer's head, held until its first body event
    _store_streamed_bodies = True  # mitmproxy's option, read once when a stream starts

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Wakeup):
            if event.command is self._hold_wakeup and self.server_state == self.state_hold_error:
                # The held body stalled: abandon that connection (its late events must not
                # reach this stream, which may be waiting on another one by then).
                self._detach(self.flow.server_conn)
                yield commands.CloseConnection(self.flow.server_conn)
                self._held = None
                self.flow.response = None
                reason = FAILOVER_REASON.require(self.flow)  # what was held: 5xx or timeout
                if self._allows(reason):
                    yield from self._fail_over(reason, "the engine's error answer stalled")
                else:
                    yield from super().handle_protocol_error(
                        ResponseProtocolError(
                            self.stream_id, "engine answer stalled", ErrorCode.GENERIC_SERVER_ERROR
                        )
                    )
            return
        yield from super()._handle_event(event)

    # ---- deciding -----------------------------------------------------------------

    def _allows(self, reason: str) -> bool:
        """Whether the flow may still fail over on `reason` (nothing was answered yet)."""
        possible = FAILOVER_POSSIBLE.get(self.flow)
        return bool(
            possible
            and reason in possible
            and self.client_state == self.state_done
            and not self.flow.request.stream
            and self.flow.error is None
            and self.context.client.state & connection.ConnectionState.CAN_WRITE
        )

    def handle_protocol_error(self, event: Any) -> layer.CommandGenerator[None]:
        if isinstance(event, ResponseProtocolError):
            if self.server_state in (self.state_wait_for_response_headers, self.state_hold_error):
                reason = CONNECT if event.code is ErrorCode.CONNECT_FAILED else DISCONNECTED
                if self.server_state == self.state_hold_error:
                    reason = FAILOVER_REASON.require(self.flow)  # the held 5xx's body was cut
                    self.flow.response = None
                if self._allows(reason):
                    yield from self._fail_over(reason, event.message)
                    return
                if self._held is not None:
                    self._held = None
                    self.flow.response = None
            elif self.server_state == self.state_stream_response_body and self._head_pending:
                # Nothing reached the client yet: as good as a failure before the head.
                self._head_pending = False
                self.flow.response = None
                if self._allows(DISCONNECTED):
                    yield from self._fail_over(DISCONNECTED, event.message)
                    return
                self.server_state = self.state_wait_for_response_headers
            elif self.server_state == self.state_stream_response_body:
                yield from self._end_cut_stream()
        yield from super().handle_protocol_error(event)

    def state_wait_for_response_headers(
        self, event: ResponseHeaders
    ) -> layer.CommandGenerator[None]:
        UPSTREAM_ANSWERED.set(self.flow, True)
        response = event.response
        reason = TIMEOUT if UPSTREAM_TIMED_OUT.get(self.flow) else HTTP_5XX
        if response.status_code < 500 or not self._allows(reason):
            yield from super().state_wait_for_response_headers(event)
            return
        self.flow.response = response
        if not event.end_stream and (yield from self.check_body_size(False)):
            return
        if (yield from self.check_invalid(False)):
            return
        FAILOVER_REASON.set(self.flow, reason)
        self._held = bytearray()
        self.server_state = self.state_hold_error
        hold = min(HOLD_TIMEOUT, FAILOVER_HOLD_TIMEOUT.get(self.flow, HOLD_TIMEOUT))
        self._hold_wakeup = commands.RequestWakeup(hold)
        yield self._hold_wakeup

    def state_hold_error(self, event: events.Event) -> layer.CommandGenerator[None]:
        """A 5xx (or timeout) answer whose body is held while the failover is decided."""
        if self._held is None or self.flow.response is None:
            raise RuntimeError("holding an answer that was never held")
        if isinstance(event, ResponseData):
            self._held += event.data
            if len(self._held) > HOLD_LIMIT:
                yield from self._release_held()
        elif isinstance(event, ResponseTrailers):
            self.flow.response.trailers = event.trailers
        elif isinstance(event, ResponseEndOfMessage):
            reason = FAILOVER_REASON.require(self.flow)
            held = self.flow.response
            held.data.content = bytes(self._held)
            self._held = None
            self.flow.response = None
            yield from self._fail_over(reason, None, held)

    def _release_held(self, end: bool = False) -> layer.CommandGenerator[None]:
        """Make the held answer the client's, as if it had just arrived."""
        if self._held is None or self.flow.response is None:
            raise RuntimeError("releasing an answer that was never held")
        held, self._held = bytes(self._held), None
        yield HttpResponseHeadersHook(self.flow)
        if (yield from self.check_killed(True)):
            return
        if self.flow.response.stream and not end:
            yield from self.start_response_stream()
            if held:
                yield from self.state_stream_response_body(ResponseData(self.stream_id, held))
        else:
            self.server_state = self.state_consume_response_body
            self.response_body_buf += held
            if end:
                yield from self.state_consume_response_body(ResponseEndOfMessage(self.stream_id))

    # ---- failing over -------------------------------------------------------------

    def _fail_over(
        self, reason: str, message: str | None, held: http.Response | None = None
    ) -> layer.CommandGenerator[None]:
        FAILOVER_REASON.set(self.flow, reason)
        FAILOVER_ERROR.set(self.flow, message)
        FAILOVER_RESEND.set(self.flow, False)
        if held is None:
            # The connection broke (or never opened): whatever its HTTP/1 layer still has to
            # say (a second error when it closes, after a head that was not HTTP) must not
            # reach this stream, which may be waiting on another engine by then. A complete
            # held answer leaves its connection healthy and reusable: that one stays.
            self._detach(self.flow.server_conn)
        self.server_state = self.state_failing_over
        yield FailoverHook(self.flow)
        if (yield from self.check_killed(True)):
            return
        if self.flow.response is not None:  # an addon answered: every candidate failed
            UPSTREAM_ANSWERED.pop(self.flow)
            yield from self._answer_set_response()
        elif FAILOVER_RESEND.pop(self.flow, False):
            UPSTREAM_ANSWERED.pop(self.flow)
            UPSTREAM_TIMED_OUT.pop(self.flow)
            yield from self._send_buffered_request()
        elif held is not None:
            self.flow.response = held
            self._held = bytearray(held.data.content or b"")
            held.data.content = None
            yield from self._release_held(end=True)
        else:
            self.server_state = self.state_wait_for_response_headers
            code = ErrorCode.CONNECT_FAILED if reason == CONNECT else ErrorCode.GENERIC_SERVER_ERROR
            yield from super().handle_protocol_error(
                ResponseProtocolError(self.stream_id, message or "engine unavailable", code)
            )

    def state_failing_over(self, _: events.Event) -> layer.CommandGenerator[None]:
        yield from ()  # the hook is running: nothing arrives for this stream meanwhile

    def _answer_set_response(self) -> layer.CommandGenerator[None]:
        """Send the answer an addon set in `flm_failover` (as mitmproxy does for `request`)."""
        if self.flow.response is None:
            raise RuntimeError("flm_failover answered without a response")
        self.flow.response.timestamp_start = time.time()
        self.server_state = self.state_wait_for_response_headers
        yield HttpResponseHeadersHook(self.flow)
        if (yield from self.check_killed(True)):
            return
        yield from self.send_response()

    def _parent_connections(self) -> dict[Any, layer.Layer]:
        """The parent `HttpLayer`'s connections (server connection -> its layer stack)."""
        parent = self.context.layers[self.context.layers.index(self) - 1]
        connections = getattr(parent, "connections", None)
        return connections if isinstance(connections, dict) else {}

    def _detach(self, server: connection.Server) -> None:
        """Make `server`'s HTTP/1 client layer forget this stream (its events go nowhere)."""
        node: Any = self._parent_connections().get(server)
        while node is not None:
            if isinstance(node, _http1.Http1Client):
                node.stream_id = _DETACHED
                return
            node = getattr(node, "child_layer", None)

    def _prune_failed_connections(self) -> None:
        """Forget connections whose connect failed: mitmproxy would hand their error to every
        later request for the same address instead of dialling again."""
        connections = self._parent_connections()
        for server in [c for c in connections if isinstance(c, connection.Server)]:
            if server.error and server.state is connection.ConnectionState.CLOSED:
                del connections[server]

    def make_server_connection(self) -> layer.CommandGenerator[bool]:
        self._prune_failed_connections()
        asked = time.time()
        ok = yield from super().make_server_connection()
        if ok:
            setup = self.flow.server_conn.timestamp_tcp_setup
            FAILOVER_REUSED.set(self.flow, setup is not None and setup < asked)
        return ok

    def _send_buffered_request(self) -> layer.CommandGenerator[None]:
        """Send the flow's complete request again, to where it points now."""
        self.server_state = self.state_wait_for_response_headers
        self.flow.response = None
        self.response_body_buf.clear()
        if self.flow.server_conn.timestamp_start is not None:
            # The failed connection is done with; a new flow of this client gets a new one.
            self.flow.server_conn = connection.Server(
                address=self.flow.server_conn.address, via=self.flow.server_conn.via
            )
        if not (yield from self.make_server_connection()):
            return  # handle_protocol_error ran for the connect failure (and may fail over)
        request = self.flow.request
        content = request.raw_content
        yield http_layers.SendHttp(
            RequestHeaders(self.stream_id, request, not content), self.context.server
        )
        if content:
            yield http_layers.SendHttp(RequestData(self.stream_id, content), self.context.server)
        yield http_layers.SendHttp(RequestEndOfMessage(self.stream_id), self.context.server)

    # ---- cut streams --------------------------------------------------------------

    def start_response_stream(self) -> layer.CommandGenerator[None]:
        """Stream the answer, but hold its head until the first body event: an engine that
        dies between its head and its first token is still failed over."""
        self._store_streamed_bodies = bool(self.context.options.store_streamed_bodies)
        if not self._allows(DISCONNECTED):
            yield from super().start_response_stream()
            return
        self._head_pending = True
        self.server_state = self.state_stream_response_body

    def state_stream_response_body(self, event: events.Event) -> layer.CommandGenerator[None]:
        if self._head_pending and self.flow.response is not None:
            self._head_pending = False
            yield http_layers.SendHttp(
                ResponseHeaders(self.stream_id, self.flow.response, end_stream=False),
                self.context.client,
            )
        response = self.flow.response
        if (
            isinstance(event, ResponseData)
            and response is not None
            and not self._store_streamed_bodies
        ):
            # Once per chunk: mitmproxy's own step for a chunk (`response.stream` applied,
            # each piece sent on), without its per-chunk option lookup (deep-copied).
            stream = response.stream
            pieces = stream(event.data) if callable(stream) else [event.data]
            for piece in [pieces] if isinstance(pieces, bytes) else pieces:
                if piece:
                    short = len(piece) < 4
                    self._sent_tail = (self._sent_tail + piece)[-4:] if short else piece[-4:]
                yield http_layers.SendHttp(ResponseData(self.stream_id, piece), self.context.client)
            return
        for command in super().state_stream_response_body(event):
            if (
                isinstance(command, http_layers.SendHttp)
                and isinstance(command.event, ResponseData)
                and command.event.data
            ):
                self._sent_tail = (self._sent_tail + command.event.data)[-4:]
            yield command

    def _end_cut_stream(self) -> layer.CommandGenerator[None]:
        """The engine cut a streamed answer: one error event for SSE API clients, if it fits."""
        response = self.flow.response
        if (
            response is None
            or API_KIND.get(self.flow) in (None, ApiKind.PASSTHROUGH)
            or not response.headers.get("content-type", "").lower().startswith(_SSE)
            or not self._sent_tail.endswith((b"\n\n", b"\r\n\r\n"))
            or not self.context.client.state & connection.ConnectionState.CAN_WRITE
        ):
            return
        STREAM_INTERRUPTED.set(self.flow, True)
        yield http_layers.SendHttp(
            ResponseData(self.stream_id, stream_interrupted_event()), self.context.client
        )


__all__ = [
    "CONNECT",
    "DISCONNECTED",
    "HOLD_LIMIT",
    "HOLD_TIMEOUT",
    "HTTP_5XX",
    "TIMEOUT",
    "FailoverHook",
    "FailoverHttpStream",
    "stream_interrupted_event",
]
