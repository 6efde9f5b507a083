"""The client side of HTTP/1 in mitmproxy, made strict and bounded for the gateway.

mitmproxy's `Http1Server` trusts its client: it buffers a request head of any size
("FIXME: protect against header size DoS"), waits for a slow client for as long as
the connection lives, accepts any `HTTP/x.y`, forwards header values with a bare CR,
a NUL or an obs-fold, crashes on request trailers, waits forever for a chunk larger
than the body limit and writes a body after a HEAD answer. Its `HttpStream` sends
`100 Continue` and reads a whole body before sending an answer an addon made on the
request's headers (a 401, 403 or 429). `install()` replaces both classes where
`HttpLayer` looks them up (`mitmproxy.proxy.layers.http`) with the subclasses below.

`GuardedHttp1Server`, per connection (limits from `server.limits`, read once when
the connection starts, so a reload applies to new connections):
- head: more than `max_head_size` bytes without the blank line ending it get 431, a
  request line over `max_url_length` 414, more than `max_headers` header lines or one
  over `max_header_line` 431; checked before mitmproxy parses the head.
- syntax (400): the request line must be exactly `METHOD SP target SP HTTP/d.d`; no
  control character but HTAB anywhere in the head, no bare CR, no obs-fold (a line
  starting with SP or HTAB), every header line `token:`. A version other than HTTP/1.0
  and HTTP/1.1 gets 505. (The Host header's rules are `host_check`'s.)
- time: a head must arrive within `header_timeout` of its first byte (of the
  connection's start for the first one), else 408; a body may pause at most
  `body_timeout` between reads, else 408; an idle keep-alive connection is closed after
  `idle_timeout`. One wakeup timer per connection, re-armed only when it fires or a
  shorter deadline begins: no timer per request.
- body: a chunk that would take the body past `body_size_limit` gets 413 as soon as
  its size line arrives; a chunk-size
  or trailer line longer than `max_head_size` 400; request trailers 400 (mitmproxy
  cannot forward them over HTTP/1); bytes pipelined behind a request in progress are
  buffered up to `max_head_size`; past that they are dropped, the request in progress
  is answered, and the connection is closed.
- answers: a HEAD answer never carries a body. An answer sent before the request's
  body was read (see below) closes the connection: the write side at once, then the
  rest of the body is read and dropped for at most `LINGER` seconds, so the client
  can read the answer instead of getting a reset (nginx's lingering close).
Every refusal here happens before any flow exists: no addon runs. Each is reported
once through the `flm_http_refused` hook (`HttpRefusedHook`: the client, status and
reason) for metrics, and answered in OpenAI's error shape (`mitm_errors`).

`GuardedHttpStream` (a `mitm_failover.FailoverHttpStream`): when an addon answered a
request on its headers (`flow.response` set in `requestheaders`) and a body is still
to come, the answer is sent at once with `Connection: close` and the body is never read; `Expect:
100-continue` is answered with `100 Continue` only when no addon answered.
A test pins the mitmproxy internals used here (`tests/test_mitm_http1.py`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from h11._readers import ChunkedReader
from mitmproxy import connection, http
from mitmproxy.options import Options
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestData,
    RequestHeaders,
    RequestProtocolError,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
)
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook
from mitmproxy.utils import human

from flm_gateway.config.limit_settings import ConnectionLimits
from flm_gateway.proxy.mitm_failover import FailoverHttpStream

LINGER = 5.0
"""Seconds a connection answered before its body was read keeps draining that body."""

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
_HEADER_NAME = re.compile(_TOKEN + rb":")
# Control characters a head may not carry anywhere (HTAB, CR and LF are checked apart).
_FORBIDDEN = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HEAD_END = re.compile(rb"\n\r?\n")
_BLANK_LINES = re.compile(rb"[\r\n]+")
_VERSIONS = {(b"1", b"0"), (b"1", b"1")}
_OPTION_PREFIX = "flm_limits_"


class Http1Limits(NamedTuple):
    """The part of `server.limits` a connection reads (once, when it starts)."""

    max_head_size: int
    max_url_length: int
    max_header_line: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    idle_timeout: float


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused at the protocol level: the status and a log reason."""

    status: int
    reason: str


BODY_TIMEOUT = Refusal(408, "request body not received in time")
TRAILERS = Refusal(400, "request trailers are not supported")
CHUNK_TOO_LARGE = Refusal(413, "chunk larger than the body size limit")
CHUNK_LINE_TOO_LONG = Refusal(400, "chunk-size or trailer line too long")
FLOW_REFUSALS: dict[str, int] = {
    refusal.reason: refusal.status
    for refusal in (BODY_TIMEOUT, TRAILERS, CHUNK_TOO_LARGE, CHUNK_LINE_TOO_LONG)
}
"""Reason -> status of the refusals made while a request's body is read: a flow exists
then, and ends with the reason as its error after the answer was sent (`outcomes`)."""


@dataclass(frozen=True)
class HttpRefusal:
    """A refusal and the client it went to (the argument of `HttpRefusedHook`)."""

    client: connection.Client
    status: int
    reason: str


@dataclass
class HttpRefusedHook(commands.StartHook):
    """The gateway refused a request before any flow existed (metrics count these).

    mitmproxy's connection handlers pass hooks exactly one argument."""

    name = "flm_http_refused"
    refusal: HttpRefusal


def check_head(head: bytes, limits: Http1Limits) -> Refusal | None:
    """Why the complete request head `head` (blank line included) is refused, or None.

    Linear in the head's length: each check is one pass of a C-level scan.
    """
    line_end = head.find(b"\n")
    request_line = head[:line_end].removesuffix(b"\r")
    if len(request_line) > limits.max_url_length:
        return Refusal(414, "request line too long")
    if _FORBIDDEN.search(head):
        return Refusal(400, "control character in the request head")
    if head.count(b"\r") != head.count(b"\r\n"):
        return Refusal(400, "bare CR in the request head")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        return Refusal(400, "malformed request line")
    if (match.group(3), match.group(4)) not in _VERSIONS:
        return Refusal(505, "HTTP version not supported")
    lines = head[line_end + 1 :].replace(b"\r\n", b"\n").split(b"\n")[:-2]
    if len(lines) > limits.max_headers:
        return Refusal(431, "too many header lines")
    for line in lines:
        if len(line) > limits.max_header_line:
            return Refusal(431, "header line too long")
        if line[:1] in (b" ", b"\t"):
            return Refusal(400, "obs-fold header line")
        if _HEADER_NAME.match(line) is None:
            return Refusal(400, "malformed header line")
    return None


def limits_of(config: ConnectionLimits) -> Http1Limits:
    return Http1Limits(*(getattr(config, name) for name in Http1Limits._fields))


def limits_from_options(options: Options) -> Http1Limits:
    """The limits the gateway put into mitmproxy's options (see `register`)."""
    return Http1Limits(*(getattr(options, _OPTION_PREFIX + name) for name in Http1Limits._fields))


def register(options: Any) -> None:
    """Declare the options that carry `server.limits` to the layers (mitmproxy's
    `Options.add_option`, or a loader's)."""
    for name, value in zip(Http1Limits._fields, limits_of(ConnectionLimits()), strict=True):
        options.add_option(_OPTION_PREFIX + name, type(value), value, f"server.limits.{name}")


def option_values(config: ConnectionLimits) -> dict[str, Any]:
    """The option updates that make new connections use `config`."""
    return {
        _OPTION_PREFIX + name: value
        for name, value in zip(Http1Limits._fields, limits_of(config), strict=True)
    }


class GuardedHttp1Server(_http1.Http1Server):
    """mitmproxy's HTTP/1 server connection with the limits of the module docstring."""

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.limits = limits_from_options(context.options)
        self.body_limit = human.parse_size(context.options.body_size_limit) or 0
        now = time.monotonic()
        self._head_since = now  # first byte of the head being read (or the connection start)
        self._idle_since: float | None = None  # None until the first request completed
        self._last_read = now
        self._linger_since: float | None = None
        self._wakeups: dict[commands.RequestWakeup, float] = {}
        self._head_scanned = 0  # bytes of the buffer already searched for the head's end
        self._body_bytes = 0  # body bytes of the current request read so far
        self._pipelined_over = False  # more was pipelined than a head may hold: close soon
        self._chunked = False  # the response being sent uses chunked transfer encoding
        self._head_only = False  # ...answers a HEAD request: its body is not sent

    def _enter(self, state: Any) -> None:
        """Switch the connection's state (mitmproxy types `state` as a method)."""
        self.state = state  # type: ignore[method-assign]

    # ---- timers -----------------------------------------------------------------

    def _deadline(self) -> tuple[float, int | None] | None:
        """When the current wait runs out, and the status to answer then (None: close)."""
        if self._linger_since is not None:
            return self._linger_since + LINGER, None
        if self.state == self.read_headers:
            if self.buf:
                return self._head_since + self.limits.header_timeout, 408
            if self._idle_since is None:
                return self._head_since + self.limits.header_timeout, None
            return self._idle_since + self.limits.idle_timeout, None
        if self.state == self.read_body:
            return self._last_read + self.limits.body_timeout, 408
        return None

    def _arm(self) -> layer.CommandGenerator[None]:
        """Request a wakeup unless one is already due no later than the current deadline."""
        deadline = self._deadline()
        if deadline is None or any(due <= deadline[0] for due in self._wakeups.values()):
            return
        wakeup = commands.RequestWakeup(max(0.0, deadline[0] - time.monotonic()))
        self._wakeups[wakeup] = deadline[0]
        yield wakeup

    def _on_wakeup(self, event: events.Wakeup) -> layer.CommandGenerator[None]:
        self._wakeups.pop(event.command, None)
        deadline = self._deadline()
        if deadline is None:
            return
        due, status = deadline
        if time.monotonic() < due:
            yield from self._arm()
            return
        if status is None:
            if self.conn.state is not connection.ConnectionState.CLOSED:
                yield commands.CloseConnection(self.conn)
            self._enter(self.done)
            self._linger_since = None
            return
        if self.state == self.read_headers:
            yield from self.refuse(Refusal(status, "request head not received in time"))
        else:
            yield from self.refuse(BODY_TIMEOUT)

    # ---- events -----------------------------------------------------------------

    def _handle_event(self, event: events.Event) -> layer.CommandGenerator[None]:
        if isinstance(event, events.Wakeup):
            yield from self._on_wakeup(event)
            return
        if isinstance(event, events.ConnectionEvent) and (
            self._linger_since is not None or self.state == self.done
        ):
            if isinstance(event, events.ConnectionClosed):
                self._linger_since = None
                if self.conn.state is not connection.ConnectionState.CLOSED:
                    yield commands.CloseConnection(self.conn)
                self._enter(self.done)
            return  # a body nobody will read: dropped, never buffered
        if isinstance(event, events.DataReceived):
            if self.state == self.read_headers and not self.buf and self._idle_since is not None:
                self._head_since = time.monotonic()
            elif self.state == self.read_body:
                self._last_read = time.monotonic()
            elif self.state == self.wait and (
                self._pipelined_over or len(self.buf) + len(event.data) > self.limits.max_head_size
            ):
                # Dropped, never buffered: the request in progress still gets its answer,
                # then the connection closes (see mark_done).
                self._pipelined_over = True
                return
        yield from super()._handle_event(event)

    def start(self, _: events.Event) -> layer.CommandGenerator[None]:
        self._enter(self.read_headers)
        yield from self._arm()

    state = start

    def read_headers(self, event: events.ConnectionEvent) -> layer.CommandGenerator[None]:
        if isinstance(event, events.DataReceived):
            data = self.buf._data  # h11's ReceiveBuffer: the bytes not consumed yet
            blank = _BLANK_LINES.match(data)
            if blank:  # empty lines before a request line are ignored (RFC 9112, 2.2)
                self.buf.maybe_extract_at_most(blank.end())
                self._head_scanned = 0
                if not data:
                    return
            end = _HEAD_END.search(data, max(0, self._head_scanned - 2))
            if end is None:
                refusal = self._incomplete_head_refusal(data)
                self._head_scanned = len(data)
                if refusal is not None:
                    yield from self.refuse(refusal)
                    return
                yield from self._arm()
                return
            self._head_scanned = 0
            if end.end() > self.limits.max_head_size:
                yield from self.refuse(Refusal(431, "request head too large"))
                return
            refusal = check_head(bytes(data[: end.end()]), self.limits)
            if refusal is not None:
                yield from self.refuse(refusal)
                return
        self._body_bytes = 0
        yield from super().read_headers(event)
        if self.state == self.read_body:
            self._last_read = time.monotonic()
            yield from self._arm()

    def _incomplete_head_refusal(self, data: bytearray) -> Refusal | None:
        """Why a head still missing its end is refused already (each byte scanned once)."""
        limit = self.limits.max_url_length
        if (
            len(data) > limit
            and self._head_scanned <= limit
            and data.find(b"\n", 0, limit + 2) == -1
        ):
            return Refusal(414, "request line too long")
        if len(data) > self.limits.max_head_size:
            return Refusal(431, "request head too large")
        return None

    def read_body(self, event: events.Event) -> layer.CommandGenerator[None]:
        try:
            # mitmproxy's read_body yields only commands that need no reply.
            for command in super().read_body(event):
                if isinstance(command, ReceiveHttp) and isinstance(command.event, RequestData):
                    self._body_bytes += len(command.event.data)
                yield command
        except NotImplementedError:  # mitmproxy: "HTTP trailers are not implemented yet."
            yield from self.refuse(TRAILERS)
            return
        if self.state != self.read_body:
            return
        reader = self.body_reader
        if (
            isinstance(reader, ChunkedReader)
            and self._body_bytes + reader._bytes_in_chunk > self.body_limit
        ):
            yield from self.refuse(CHUNK_TOO_LARGE)
        elif len(self.buf) > self.limits.max_head_size:
            yield from self.refuse(CHUNK_LINE_TOO_LONG)

    def mark_done(
        self, *, request: bool = False, response: bool = False
    ) -> layer.CommandGenerator[None]:
        if response and self._pipelined_over and self.request_done:
            self.response_done = True
            yield from self.refuse(Refusal(400, "too much data pipelined behind a request"))
            return
        yield from super().mark_done(request=request, response=response)
        if self.state == self.read_headers and response:
            self._idle_since = self._head_since = time.monotonic()
            yield from self._arm()

    def send(self, event: Any) -> layer.CommandGenerator[None]:
        if isinstance(event, ResponseData):
            # Once per chunk of a stream: framed as the head said (noted when it was sent),
            # instead of mitmproxy's header lookup and method decoding per chunk.
            if not self._head_only:
                data = event.data
                raw = b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data
                if raw:
                    yield commands.SendData(self.conn, raw)
            return  # a HEAD answer has headers only
        if isinstance(event, ResponseHeaders):
            self._chunked = "chunked" in event.response.headers.get("transfer-encoding", "").lower()
            self._head_only = self.request is not None and self.request.method == "HEAD"
        body_unread = isinstance(event, ResponseEndOfMessage) and not self.request_done
        yield from super().send(event)
        if body_unread and self.state == self.read_body:
            # Answered before the body was read: stop writing, drop the body for a while.
            yield commands.CloseTcpConnection(self.conn, half_close=True)
            self._linger_since = time.monotonic()
            self._enter(self.done)
            yield from self._arm()

    # ---- refusing -----------------------------------------------------------------

    def refuse(self, refusal: Refusal) -> layer.CommandGenerator[None]:
        """Answer `refusal` (if nothing was answered yet), close, end the stream if any."""
        if self.response is None and self.conn.state & connection.ConnectionState.CAN_WRITE:
            yield commands.SendData(
                self.conn, _http1.make_error_response(refusal.status, refusal.reason)
            )
        yield commands.CloseConnection(self.conn)
        if self.request is not None and not self.request_done:
            yield ReceiveHttp(
                RequestProtocolError(self.stream_id, refusal.reason, ErrorCode.GENERIC_CLIENT_ERROR)
            )
        self._enter(self.done)
        self._linger_since = None
        yield HttpRefusedHook(HttpRefusal(self.context.client, refusal.status, refusal.reason))


def _is_continue(command: commands.Command) -> bool:
    return (
        isinstance(command, http_layers.SendHttp)
        and isinstance(command.event, ResponseHeaders)
        and command.event.response.status_code == 100
    )


class GuardedHttpStream(FailoverHttpStream):
    """mitmproxy's HTTP stream that answers a request refused on its headers at once
    (and fails over, see `mitm_failover`)."""

    def state_wait_for_request_headers(self, event: RequestHeaders) -> layer.CommandGenerator[None]:
        inner = super().state_wait_for_request_headers(event)
        reply: Any = None
        while True:
            try:
                command = inner.send(reply)
            except StopIteration:
                break
            if _is_continue(command) and self.flow.response is not None:
                reply = None  # no 100 Continue for a request already answered
                continue
            reply = yield command
        if (
            not event.end_stream
            and self.flow.response is not None
            and self.client_state == self.state_consume_request_body
        ):
            yield from self._answer_before_body()

    def _answer_before_body(self) -> layer.CommandGenerator[None]:
        """Send the answer an addon made on the headers; the body is never read."""
        response = self.flow.response
        if response is None:
            raise RuntimeError("answering before the body without a response")
        response.headers["connection"] = "close"
        response.timestamp_start = time.time()
        self.client_state = self.state_errored  # whatever body arrives is dropped
        yield HttpResponseHeadersHook(self.flow)
        if (yield from self.check_killed(True)):
            return
        yield from self.send_response()
        yield from self.flow_done()

    def flow_done(self) -> layer.CommandGenerator[None]:
        yield from super().flow_done()
        if self.child_layer is None:
            # Finished and dropped by the HTTP layer (no WebSocket or TCP layer took the
            # flow over): let go of the flow. A stream is a reference cycle (its state is a
            # bound method of itself, its context lists it), so a flow it held waited for
            # the cyclic collector: ~30 objects per request, a collection (a pause of up
            # to milliseconds) every ~50 requests, and a large body held until then.
            self.flow = None  # type: ignore[assignment]


def install() -> None:
    """Make mitmproxy's HTTP layer use the guarded classes (idempotent)."""
    http_layers.Http1Server = GuardedHttp1Server  # type: ignore[attr-defined]
    http_layers.HttpStream = GuardedHttpStream  # type: ignore[misc]


__all__ = [
    "FLOW_REFUSALS",
    "LINGER",
    "GuardedHttp1Server",
    "GuardedHttpStream",
    "HttpRefusal",
    "HttpRefusedHook",
    "Refusal",
    "check_head",
    "install",
    "option_values",
    "register",
]
_ = http  # mitmproxy.http is imported so its types register before the layers
