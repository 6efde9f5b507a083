"""A small HTTP/1.1 client for the gateway's own requests, on asyncio streams and h11.

Policy:
- Every connection is opened by the session's `connect(host, port)`, which gets the
  host name unresolved (an egress proxy resolves it; see `egress.sessions`). For
  https URLs TLS runs over that socket with the URL's host as SNI, verified against
  the system trust store (`SSL_CERT_FILE` is honoured). Nothing reads proxy
  settings from the environment.
- One timeout bounds the whole request: waiting for a connection, sending, and
  reading the complete response.
- Responses are read whole, up to `max_body` bytes; a longer one is an error, not a
  truncated body. Bodies are passed on as sent (no decompression).
- Idle keep-alive connections (at most `max_idle` per host) are reused for GET and
  HEAD only. Other methods always get a new connection, so a request that must not
  run twice is never written to a connection the server may just have closed. A
  GET on a reused connection that dies before any answer is sent once more on a
  new connection.
- Failures raise `HttpClientError`, whose text is a short reason that never holds
  the URL or a header (so no key leaks into a log line).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import h11

Connect = Callable[[str, int], Awaitable[socket.socket]]
"""Opens a connected socket to (host, port); raises OSError."""

MAX_BODY = 64 * 1024 * 1024
_READ_SIZE = 65536
_IDEMPOTENT = frozenset({"GET", "HEAD"})
_USER_AGENT = "flm-gateway"


class HttpClientError(Exception):
    """There is no HTTP answer; the text says why, without URL or headers."""


class ConnectError(HttpClientError):
    """No connection: `os_error` is what `connect` or the TLS handshake raised."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(_connect_failure(os_error))
        self.os_error = os_error


def _connect_failure(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({error.reason or error})"
    reason = os.strerror(error.errno).lower() if error.errno else str(error)
    return f"cannot connect ({reason})"


class RequestTimeout(HttpClientError):
    """The request did not complete within its timeout."""

    def __init__(self) -> None:
        super().__init__("timed out")


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    """As received, in order; names lower-cased."""
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> tuple[_Origin, str]:
        """The origin of `url` and its request target (path and query)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpClientError("not an http(s) URL")
        if parts.username is not None:
            raise HttpClientError("credentials in the URL are not supported")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port), target

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class _Connection:
    """One HTTP/1.1 connection and its h11 state machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.received_any = False

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.IDLE and not self.reader.at_eof()

    def send(self, *events: h11.Event) -> None:
        self.writer.write(b"".join(self.h11.send(event) or b"" for event in events))

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(_READ_SIZE)
            if not data and self.h11.their_state is h11.SEND_RESPONSE:
                raise HttpClientError("the connection closed without an answer")
            self.received_any = self.received_any or bool(data)
            self.h11.receive_data(data)

    def finish_cycle(self) -> bool:
        """Ready the connection for the next request; False when it must close."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.received_any = False
            return True
        return False

    def close(self) -> None:
        self.writer.close()


class HttpSession:
    """Requests over connections opened by `connect`; close it when done."""

    def __init__(self, connect: Connect, *, max_idle: int = 4, max_body: int = MAX_BODY) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._max_body = max_body
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get(
        self, url: str, *, headers: Iterable[tuple[str, str]] = (), timeout: float
    ) -> Response:
        return await self.request("GET", url, headers=headers, timeout=timeout)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        timeout: float,
    ) -> Response:
        """Send one request and read the whole response; raises HttpClientError."""
        if self._closed:
            raise HttpClientError("the session is closed")
        origin, target = _Origin.of(url)
        request = _request_event(method, target, origin.host_header, list(headers), body)
        try:
            async with asyncio.timeout(timeout):
                if method in _IDEMPOTENT:
                    idle = self._take_idle(origin)
                    if idle is not None:
                        try:
                            return await self._exchange(origin, idle, request, body)
                        except HttpClientError:
                            if idle.received_any:
                                raise
                return await self._exchange(origin, await self._open(origin), request, body)
        except TimeoutError:
            raise RequestTimeout() from None

    async def close(self) -> None:
        """Close the idle connections; connections in use close when their request ends."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        connections = self._idle.get(origin, [])
        while connections:
            connection = connections.pop()
            if connection.reusable:
                return connection
            connection.close()
        return None

    def _put_idle(self, origin: _Origin, connection: _Connection) -> None:
        connections = self._idle.setdefault(origin, [])
        if self._closed or len(connections) >= self._max_idle or not connection.finish_cycle():
            connection.close()
        else:
            connections.append(connection)

    async def _open(self, origin: _Origin) -> _Connection:
        try:
            sock = await self._connect(origin.host, origin.port)
        except OSError as exc:
            raise ConnectError(exc) from None
        try:
            reader, writer = await asyncio.open_connection(
                sock=sock,
                ssl=self._tls_context() if origin.scheme == "https" else None,
                server_hostname=origin.host if origin.scheme == "https" else None,
                limit=_READ_SIZE,
            )
        except OSError as exc:  # ssl.SSLError included: a failed handshake
            sock.close()
            raise ConnectError(exc) from None
        except BaseException:
            sock.close()
            raise
        return _Connection(reader, writer)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def _exchange(
        self, origin: _Origin, connection: _Connection, request: h11.Request, body: bytes
    ) -> Response:
        """One request/response on `connection`; it goes back to the pool or is closed."""
        done = False
        try:
            connection.send(request, *([h11.Data(data=body)] if body else []), h11.EndOfMessage())
            await connection.writer.drain()
            response = await _read_response(connection, self._max_body)
            done = True
        except h11.LocalProtocolError as exc:
            raise HttpClientError(f"the request is not valid HTTP ({exc})") from None
        except h11.RemoteProtocolError as exc:
            if connection.reader.at_eof():
                raise HttpClientError("the connection closed in the middle of the answer") from None
            raise HttpClientError(f"not an HTTP answer ({exc})") from None
        except OSError as exc:
            raise HttpClientError(f"the connection failed ({exc.__class__.__name__})") from None
        finally:
            if done:
                self._put_idle(origin, connection)
            else:
                connection.close()
        return response


def _request_event(
    method: str, target: str, host: str, headers: list[tuple[str, str]], body: bytes
) -> h11.Request:
    names = {name.lower() for name, _ in headers}
    extra = [] if "host" in names else [("Host", host)]
    if "user-agent" not in names:
        extra.append(("User-Agent", _USER_AGENT))
    if "content-length" not in names and (body or method not in _IDEMPOTENT):
        extra.append(("Content-Length", str(len(body))))
    return h11.Request(method=method, target=target, headers=extra + headers)


async def _read_response(connection: _Connection, max_body: int) -> Response:
    event = await connection.next_event()
    while isinstance(event, h11.InformationalResponse):
        event = await connection.next_event()
    if not isinstance(event, h11.Response):
        raise HttpClientError(f"not an HTTP answer ({type(event).__name__})")
    status = event.status_code
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers]
    chunks: list[bytes] = []
    size = 0
    while not isinstance(event := await connection.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > max_body:
                raise HttpClientError(f"the answer is longer than {max_body} bytes")
            chunks.append(bytes(event.data))
    return Response(status, headers, b"".join(chunks))
