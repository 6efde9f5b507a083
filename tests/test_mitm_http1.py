"""mitm_http1: the head checks as a table, the guarded layer driven by events, and the
mitmproxy internals it relies on, pinned so an upgrade that moves them fails here."""

from __future__ import annotations

import gc
import inspect
import weakref

import pytest
from h11._readers import ChunkedReader
from h11._receivebuffer import ReceiveBuffer
from mitmproxy.options import Options
from mitmproxy.proxy import commands, events, mode_servers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.test import tflow

from flm_gateway.config.limit_settings import ConnectionLimits
from flm_gateway.proxy import mitm_errors, mitm_http1
from flm_gateway.proxy.mitm_http1 import (
    GuardedHttp1Server,
    GuardedHttpStream,
    HttpRefusedHook,
    Refusal,
    check_head,
    limits_of,
)

LIMITS = limits_of(ConnectionLimits())
OK = b"GET /v1/models HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"

HEADS: list[tuple[str, bytes, Refusal | None]] = [
    ("plain", OK, None),
    ("HTTP/1.0 without headers", b"GET / HTTP/1.0\r\n\r\n", None),
    ("LF-only lines", b"GET / HTTP/1.1\nHost: h\n\n", None),
    ("HTAB and obs-text in a value", b"GET / HTTP/1.1\r\nX: a\tb\xe9\r\n\r\n", None),
    ("non-ASCII in the target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", None),
    ("HTTP/9.9", b"GET / HTTP/9.9\r\nHost: h\r\n\r\n", Refusal(505, "HTTP version not supported")),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\n\r\n", Refusal(505, "HTTP version not supported")),
    ("HTTP/0.9", b"GET / HTTP/0.9\r\n\r\n", Refusal(505, "HTTP version not supported")),
    ("lower-case version", b"GET / http/1.1\r\n\r\n", Refusal(400, "malformed request line")),
    ("two spaces", b"GET  / HTTP/1.1\r\n\r\n", Refusal(400, "malformed request line")),
    ("tabs", b"GET\t/\tHTTP/1.1\r\n\r\n", Refusal(400, "malformed request line")),
    ("no version", b"GET /\r\n\r\n", Refusal(400, "malformed request line")),
    ("method not a token", b"G(T / HTTP/1.1\r\n\r\n", Refusal(400, "malformed request line")),
    (
        "bare CR",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        Refusal(400, "bare CR in the request head"),
    ),
    (
        "NUL",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        Refusal(400, "control character in the request head"),
    ),
    (
        "ESC in the target",
        b"GET /\x1b HTTP/1.1\r\n\r\n",
        Refusal(400, "control character in the request head"),
    ),
    (
        "DEL",
        b"GET / HTTP/1.1\r\nX: \x7f\r\n\r\n",
        Refusal(400, "control character in the request head"),
    ),
    ("obs-fold", b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Refusal(400, "obs-fold header line")),
    (
        "obs-fold, tab",
        b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n",
        Refusal(400, "obs-fold header line"),
    ),
    (
        "space before colon",
        b"GET / HTTP/1.1\r\nX : a\r\n\r\n",
        Refusal(400, "malformed header line"),
    ),
    ("no colon", b"GET / HTTP/1.1\r\nXa\r\n\r\n", Refusal(400, "malformed header line")),
    (
        "URL over the limit",
        b"GET /" + b"a" * LIMITS.max_url_length + b" HTTP/1.1\r\n\r\n",
        Refusal(414, "request line too long"),
    ),
    (
        "a header line over the limit",
        b"GET / HTTP/1.1\r\nX: " + b"a" * LIMITS.max_header_line + b"\r\n\r\n",
        Refusal(431, "header line too long"),
    ),
    (
        "too many header lines",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (LIMITS.max_headers + 1) + b"\r\n",
        Refusal(431, "too many header lines"),
    ),
    (
        "exactly the header count",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * LIMITS.max_headers + b"\r\n",
        None,
    ),
]


@pytest.mark.parametrize(
    ("head", "refusal"), [(h, r) for _, h, r in HEADS], ids=[n for n, _, _ in HEADS]
)
def test_check_head(head: bytes, refusal: Refusal | None) -> None:
    assert check_head(head, LIMITS) == refusal


def test_check_head_is_linear_in_the_head() -> None:
    """Every check is a C-level scan: a 1,000x longer head costs < 3,000x the work."""
    import time

    def cost(lines: int) -> float:
        head = b"GET / HTTP/1.1\r\n" + b"X-a: " + b"b \t" * lines + b"\r\n\r\n"
        limits = LIMITS._replace(max_header_line=1 << 30, max_head_size=1 << 30)
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for _ in range(20):
                check_head(head, limits)
            best = min(best, time.process_time() - started)
        return max(best, 1e-6)

    assert cost(100_000) / cost(100) < 3000


# ---- the layer, driven by events ----------------------------------------------------------


def _context() -> Context:
    options = Options()
    mitm_http1.register(options)
    options.add_option("body_size_limit", str | None, "1048576", "")
    return Context(tflow.tclient_conn(), options)


def _drive(layer: GuardedHttp1Server, event: events.Event) -> list[commands.Command]:
    return list(layer.handle_event(event))


def test_the_layer_asks_one_wakeup_at_start_and_none_per_byte() -> None:
    layer = GuardedHttp1Server(_context())
    started = _drive(layer, events.Start())
    assert [type(c) for c in started] == [commands.RequestWakeup]
    more = _drive(layer, events.DataReceived(layer.conn, b"GET / HT"))
    assert more == []  # the pending wakeup is due no later than this head's deadline


def test_an_unterminated_head_is_refused_at_the_limit_not_later() -> None:
    mitm_errors.install()
    layer = GuardedHttp1Server(_context())
    _drive(layer, events.Start())
    assert _drive(layer, events.DataReceived(layer.conn, b"GET / HTTP/1.1\r\nX: ")) == []
    out: list[commands.Command] = []
    for _ in range(40):  # 40 KiB, 1 KiB at a time
        out += _drive(layer, events.DataReceived(layer.conn, b"a" * 1024))
        if out:
            break
    sent, closed, hook = out
    assert isinstance(sent, commands.SendData) and sent.data.startswith(b"HTTP/1.1 431")
    assert isinstance(closed, commands.CloseConnection)
    assert isinstance(hook, HttpRefusedHook) and hook.refusal.status == 431
    assert len(layer.buf) <= LIMITS.max_head_size + 1024  # never buffered beyond the limit


def test_a_wakeup_past_a_stalled_head_answers_408() -> None:
    mitm_errors.install()
    layer = GuardedHttp1Server(_context())
    (wakeup,) = _drive(layer, events.Start())
    _drive(layer, events.DataReceived(layer.conn, b"GET / HTTP/1.1\r\n"))
    layer._head_since -= LIMITS.header_timeout  # as if the timeout passed
    assert isinstance(wakeup, commands.RequestWakeup)
    sent, _, hook = _drive(layer, events.Wakeup(wakeup))
    assert isinstance(sent, commands.SendData) and sent.data.startswith(b"HTTP/1.1 408")
    assert isinstance(hook, HttpRefusedHook) and hook.refusal.status == 408


def test_an_early_wakeup_is_re_armed_for_the_rest() -> None:
    layer = GuardedHttp1Server(_context())
    (wakeup,) = _drive(layer, events.Start())
    assert isinstance(wakeup, commands.RequestWakeup)
    (again,) = _drive(layer, events.Wakeup(wakeup))  # nothing due yet
    assert isinstance(again, commands.RequestWakeup) and again.delay > 0


# ---- the mitmproxy internals relied on ------------------------------------------------------


def test_install_replaces_the_classes_httplayer_looks_up() -> None:
    mitm_http1.install()
    assert http_layers.Http1Server is GuardedHttp1Server
    assert http_layers.HttpStream is GuardedHttpStream
    layer_source = inspect.getsource(http_layers.HttpLayer)
    assert "Http1Server(self.context.fork())" in layer_source
    assert "HttpStream(ctx, stream_id)" in layer_source


def test_the_internals_the_guarded_classes_use_are_where_they_were() -> None:
    assert hasattr(ChunkedReader(), "_bytes_in_chunk")
    assert isinstance(ReceiveBuffer()._data, bytearray)
    assert "HTTP trailers are not implemented" in inspect.getsource(_http1.Http1Connection)
    assert "state = start" in inspect.getsource(_http1.Http1Connection)
    assert "(data,) = hook.args()" in inspect.getsource(mode_servers.ProxyConnectionHandler)
    original = GuardedHttpStream.__mro__[1]  # mitmproxy's HttpStream
    stream = inspect.getsource(original.state_wait_for_request_headers)
    assert '"100-continue"' in stream and "HttpRequestHeadersHook(self.flow)" in stream


def _sent_for(layer_class: type[_http1.Http1Server], method: str, chunked: bool) -> bytes:
    """The bytes `layer_class` writes for a request `method` answered by a head and two
    body chunks (chunked transfer encoding or a content-length)."""
    from mitmproxy.proxy.layers.http._events import ResponseData, ResponseHeaders
    from mitmproxy.test import tutils

    layer = layer_class(_context())
    list(layer.handle_event(events.Start()))
    request = f"{method} /v1/chat/completions HTTP/1.1\r\nHost: h\r\n\r\n".encode()
    list(layer.handle_event(events.DataReceived(layer.conn, request)))
    response = tutils.tresp(content=b"")
    response.headers.clear()
    if chunked:
        response.headers["transfer-encoding"] = "chunked"
    else:
        response.headers["content-length"] = "12"
    out = list(layer.handle_event(ResponseHeaders(1, response, end_stream=False)))
    for piece in (b"data: a\n\n", b"bc\n"):
        out += layer.handle_event(ResponseData(1, piece))
    return b"".join(c.data for c in out if isinstance(c, commands.SendData))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("chunked", [True, False])
def test_stream_chunks_are_framed_as_mitmproxy_frames_them(method: str, chunked: bool) -> None:
    # GuardedHttp1Server frames a chunk from what the head said, noted once per response.
    ours = _sent_for(GuardedHttp1Server, method, chunked)
    body = ours.split(b"\r\n\r\n", 1)[1]
    if method == "HEAD":
        assert body == b""  # a HEAD answer has headers only (mitmproxy's would send them)
        return
    assert ours == _sent_for(_http1.Http1Server, method, chunked)
    if chunked:
        assert body == b"9\r\ndata: a\n\n\r\n3\r\nbc\n\r\n"
    else:
        assert body == b"data: a\n\nbc\n"


# ---- a finished stream lets go of its flow ------------------------------------------------


def _finished_stream(status: int) -> GuardedHttpStream:
    stream = GuardedHttpStream(_context(), 1)
    stream.flow = tflow.tflow(resp=True)
    assert stream.flow.response is not None
    stream.flow.response.status_code = status
    return stream


def test_a_finished_stream_drops_its_flow_so_refcounting_frees_it() -> None:
    """The stream is a reference cycle; a flow it kept would wait for the cyclic collector."""
    stream = _finished_stream(200)
    flow = weakref.ref(stream.flow)
    # tflow's own garbage (mitmproxy's debug-mode field checks leave a traceback cycle
    # holding the flow; the gateway switches them off, mitm_typecheck) goes first.
    gc.collect()
    commands_ = list(stream.flow_done())
    assert http_layers.DropStream in [type(c) for c in commands_]
    assert stream.flow is None
    assert flow() is None  # freed at once, no gc.collect()


def test_an_upgraded_stream_keeps_its_flow_for_the_layer_that_took_it_over() -> None:
    stream = _finished_stream(101)
    stream.context.options.rawtcp = True  # the TCP layer takes the upgraded connection over
    list(stream.flow_done())
    assert stream.child_layer is not None
    assert stream.flow is not None
