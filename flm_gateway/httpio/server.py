"""A small HTTP/1.1 server for the gateway's own endpoints, on asyncio streams and h11.

It serves the admin listener and the plain-HTTP side server (ACME http-01
answers, redirects to HTTPS): a few small answers, never a proxy. One
`Handler` answers every request; the server owns the protocol.

Policy, per connection:
- Keep-alive: requests are answered in order on one connection until the
  client closes it or asks to (`Connection: close`, HTTP/1.0).
- Every response carries Content-Length (a handler's own Content-Length or
  Transfer-Encoding is replaced); a HEAD answer has the headers and no body.
- Request bodies are not wanted: up to `max_body_bytes` (64 KiB) they are read
  and dropped, a larger one is answered 413 (at once when Content-Length says so).
- A request head over `max_header_bytes` (16 KiB) is answered 431, input that
  is not HTTP/1.x 400.
- A request (head and body) must arrive within `idle_timeout` (30 s) of the
  connect or of the previous answer: idle and slow clients are disconnected
  without an answer, so slowloris connections do not pile up.
- An exception in the handler is logged with its traceback and answered 500.
- The server's own errors (400, 413, 431, 500) carry OpenAI-shaped JSON
  (`errors.error_body`) with a generic message, never a traceback, and close
  the connection after a short lingering close (so the client reads the answer
  instead of a reset); the handler decides every other answer.
- `close()` stops listening and aborts the open connections at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import h11

from flm_gateway.core.errors import error_body

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 30.0
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
LINGER_SECONDS = 2.0
_READ_SIZE = 16 * 1024
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_REFUSALS = {
    400: ("The request is not valid HTTP.", "invalid_http"),
    413: ("The request body is larger than this endpoint accepts.", "request_too_large"),
    431: ("The request headers are larger than this endpoint accepts.", "headers_too_large"),
    500: ("The server could not answer this request.", "internal_error"),
}
Headers = tuple[tuple[str, str], ...]
_JSON_TYPE = ("Content-Type", "application/json")


@dataclass(frozen=True)
class Request:
    """A request's head: `target` is the path and query as sent (origin-form),
    header names are lower case, `local` is the (host, port) it arrived on."""

    method: str
    target: str
    headers: Headers = ()
    local: tuple[str, int] | None = None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def host(self) -> str | None:
        return self.header("host")

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


@dataclass(frozen=True)
class Response:
    """What a handler answers; the server adds Content-Length."""

    status: int
    body: bytes = b""
    headers: Headers = ()

    @classmethod
    def text(cls, status: int, text: str, headers: Headers = ()) -> Response:
        return cls(status, text.encode(), (("Content-Type", "text/plain; charset=utf-8"), *headers))

    @classmethod
    def json(cls, status: int, payload: object, headers: Headers = ()) -> Response:
        return cls(status, json.dumps(payload).encode(), (_JSON_TYPE, *headers))

    @classmethod
    def error(cls, status: int, message: str, code: str | None = None) -> Response:
        """An OpenAI-shaped JSON error (`errors.error_body`)."""
        return cls(status, error_body(status, message, code=code), (_JSON_TYPE,))


Handler = Callable[[Request], Awaitable[Response]]


class _Refusal(Exception):
    """The server answers `status` itself (`_REFUSALS`) and closes the connection."""

    def __init__(self, status: int, head_only: bool = False) -> None:
        super().__init__(status)
        self.status = status
        self.head_only = head_only

    def encode(self) -> bytes:
        message, code = _REFUSALS[self.status]
        body = error_body(self.status, message, code=code)
        head = (
            f"HTTP/1.1 {self.status} {_PHRASES[self.status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        return head if self.head_only else head + body


class HttpServer:
    """Serves one handler on one address. Single use: `start` once, `close` once."""

    def __init__(
        self,
        handler: Handler,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._handler = handler
        self._idle_timeout = idle_timeout
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._server: asyncio.Server | None = None
        self._closed = False
        self._connections: dict[asyncio.Task[object], asyncio.StreamWriter] = {}

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound (host, port) (of the first socket), None when not listening."""
        if self._server is None or not self._server.sockets:
            return None
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start(self, host: str | None, port: int) -> None:
        """Listen on host:port (None: every address of both families; port 0: any free
        port); raises OSError when it cannot bind."""
        if self._server is not None or self._closed:
            raise RuntimeError("an HttpServer is started once")
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True)

    async def close(self) -> None:
        """Stop listening and abort every open connection, an answer in flight included."""
        self._closed = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._connections.items())
        for task, writer in tasks:
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*(task for task, _ in tasks), return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closed or task is None:
            writer.transport.abort()
            return
        self._connections[task] = writer
        sockname = writer.get_extra_info("sockname")
        local = (str(sockname[0]), int(sockname[1])) if isinstance(sockname, tuple) else None
        try:
            await self._serve(reader, writer, local)
        except (OSError, TimeoutError):
            pass  # the client went away, or was too slow
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        local: tuple[str, int] | None,
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_header_bytes)
        while True:
            try:
                async with asyncio.timeout(self._idle_timeout):
                    head = await self._read_request(conn, reader)
                if head is None:
                    return
                request = _request(head, local)
                response = await self._call(request)
                await self._write(writer, _encode(conn, response, request.method == "HEAD"))
            except _Refusal as refusal:
                await self._refuse(reader, writer, refusal)
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Request | None:
        """The next request's head, its body read and dropped; None when the client closed."""
        head = await _next_event(conn, reader)
        if isinstance(head, h11.ConnectionClosed):
            return None
        if not isinstance(head, h11.Request) or not head.http_version.startswith(b"1."):
            raise _Refusal(400)
        # h11 bounds an incomplete head; one that arrived whole in a read is measured here.
        size = len(head.target) + sum(len(k) + len(v) + 4 for k, v in head.headers)
        if size > self._max_header_bytes:
            raise _Refusal(431)
        declared = next((int(v) for k, v in head.headers if k == b"content-length"), 0)
        if declared > self._max_body_bytes:
            raise _Refusal(413)
        received = 0
        while not isinstance(event := await _next_event(conn, reader), h11.EndOfMessage):
            if not isinstance(event, h11.Data):
                raise _Refusal(400)
            received += len(event.data)
            if received > self._max_body_bytes:
                raise _Refusal(413)
        return head

    async def _call(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except Exception:
            log.exception("answering %s %s failed", request.method, request.path)
            raise _Refusal(500, request.method == "HEAD") from None

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        async with asyncio.timeout(self._idle_timeout):
            await writer.drain()

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refusal: _Refusal
    ) -> None:
        log.debug("answered %d and closed the connection", refusal.status)
        await self._write(writer, refusal.encode())
        # Closing with unread input makes the kernel send a reset, which can destroy the
        # answer before the client reads it: stop sending, then drop input for a moment.
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                while await reader.read(_READ_SIZE):
                    pass


async def _next_event(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> h11.Event | type[h11.PAUSED]:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _Refusal(431 if exc.error_status_hint == 431 else 400) from None
        if event is not h11.NEED_DATA:
            return event  # type: ignore[return-value]  # NEED_DATA is excluded above
        conn.receive_data(await reader.read(_READ_SIZE))


def _request(head: h11.Request, local: tuple[str, int] | None) -> Request:
    target = head.target.decode("ascii")
    if not target.startswith("/") and "://" in target:  # absolute-form: keep path and query
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
    return Request(head.method.decode("ascii"), target, headers, local)


def _encode(conn: h11.Connection, response: Response, head_only: bool) -> bytes:
    headers = [(k, v) for k, v in response.headers if k.lower() not in _FRAMING_HEADERS]
    headers.append(("Content-Length", str(len(response.body))))
    try:
        reason = _PHRASES.get(response.status, "")
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        if response.body and not head_only:
            data += conn.send(h11.Data(data=response.body))
        return data + conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        log.exception("the handler's %d answer is not valid HTTP", response.status)
        raise _Refusal(500, head_only) from None
