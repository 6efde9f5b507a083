"""`HttpSession` against scripted servers on 127.0.0.1: keep-alive, retries, limits, TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from flm_gateway.egress.sessions import direct_session
from flm_gateway.httpio.http_client import ConnectError, HttpClientError, RequestTimeout
from flm_gateway.tls import pki
from tests.support.gateway_process import free_port

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]
Script = Callable[["Server", Reader, Writer], Awaitable[None]]
"""What the server does with one connection."""
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Server:
    """Runs `handler` for each connection; records each connection's request heads."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: list[list[bytes]] = []
        self.open: set[asyncio.StreamWriter] = set()
        self.ended = 0
        self.port = 0

    def close_clients(self) -> None:
        """Close every open connection (asyncio.Server.close_clients is Python 3.13+)."""
        for writer in self.open:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append([])
        self.open.add(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open.discard(writer)
            writer.close()
            self.ended += 1

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request head (and a Content-Length body), recorded on the current connection."""
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                head += await reader.readexactly(int(line.split(b":")[1]))
        self.connections[-1].append(head)
        return head


@asynccontextmanager
async def serving(
    handler: Script,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    server = Server(lambda reader, writer: handler(server, reader, writer))
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        server.close_clients()
        await listener.wait_closed()


async def keep_alive(server: Server, reader: Reader, w: Writer) -> None:
    while not reader.at_eof():
        try:
            await server.read_request(reader)
        except asyncio.IncompleteReadError:
            return
        w.write(OK)
        await w.drain()


async def one_answer(server: Server, reader: Reader, w: Writer) -> None:
    """Answers one request, then closes on the next without an answer: the server ended
    the idle keep-alive connection just as the client reused it."""
    await server.read_request(reader)
    w.write(OK)
    await w.drain()
    await server.read_request(reader)


def answering(raw: bytes) -> Script:
    """A script that reads one request and writes `raw` as the answer, then closes."""

    async def script(server: Server, reader: Reader, w: Writer) -> None:
        await server.read_request(reader)
        w.write(raw)
        await w.drain()

    return script


async def test_gets_share_one_connection_and_posts_get_their_own() -> None:
    async with serving(keep_alive) as server, direct_session() as session:
        url = f"http://127.0.0.1:{server.port}/v1/models?x=1"
        for _ in range(2):
            response = await session.get(url, headers=[("Authorization", "Bearer k")], timeout=5)
            assert (response.status, response.body) == (200, b"ok")
        await session.request("POST", url, body=b'{"a": 1}', timeout=5)
        await session.request("POST", url, timeout=5)
    assert [len(requests) for requests in server.connections] == [2, 1, 1]
    first = server.connections[0][0]
    assert first.startswith(b"GET /v1/models?x=1 HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{server.port}\r\n".encode() in first.lower()
    assert b"Authorization: Bearer k\r\n" in first
    post, empty_post = server.connections[1][0], server.connections[2][0]
    assert b"content-length: 8\r\n" in post.lower() and post.endswith(b'\r\n\r\n{"a": 1}')
    assert b"content-length: 0\r\n" in empty_post.lower()


async def test_a_get_on_a_connection_the_server_closed_is_sent_again() -> None:
    async with serving(one_answer) as server, direct_session() as session:
        url = f"http://127.0.0.1:{server.port}/health"
        assert (await session.get(url, timeout=5)).status == 200
        assert (await session.get(url, timeout=5)).status == 200
    assert [len(requests) for requests in server.connections] == [2, 1]


async def test_an_answer_cut_short_or_missing_on_a_new_connection_is_an_error() -> None:
    async def no_answer(server: Server, reader: Reader, w: Writer) -> None:
        await server.read_request(reader)

    async with (
        serving(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")) as server,
        direct_session() as session,
    ):
        with pytest.raises(HttpClientError, match="in the middle of the answer"):
            await session.get(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert len(server.connections) == 1
    async with serving(no_answer) as server, direct_session() as session:
        with pytest.raises(HttpClientError, match="closed without an answer"):
            await session.request("POST", f"http://127.0.0.1:{server.port}/", timeout=5)
    assert len(server.connections) == 1


async def test_chunked_answers_and_informational_responses_are_read_whole() -> None:
    chunked = answering(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
        b"X-Engine: a\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with serving(chunked) as server, direct_session() as session:
        response = await session.get(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert (response.status, response.body) == (503, b"abcde")
    assert response.header("X-ENGINE") == "a" and response.header("missing") is None


async def test_limits_and_failures_have_short_reasons_without_the_url() -> None:
    async def silent(server: Server, reader: Reader, w: Writer) -> None:
        await server.read_request(reader)
        await asyncio.sleep(10)

    async with serving(silent) as server, direct_session() as session:
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match=r"^timed out$"):
            await session.get(f"http://127.0.0.1:{server.port}/secret-path", timeout=0.3)
        assert time.monotonic() - started < 2
    async with (
        serving(answering(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as server,
        direct_session() as session,
    ):
        with pytest.raises(HttpClientError, match=r"^not an HTTP answer") as caught:
            await session.get(f"http://127.0.0.1:{server.port}/secret-path", timeout=5)
        assert "secret-path" not in str(caught.value)
    async with (
        serving(
            answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n" + b"x" * 2048)
        ) as server,
        direct_session(max_body=1024) as session,
    ):
        with pytest.raises(HttpClientError, match="longer than 1024 bytes"):
            await session.get(f"http://127.0.0.1:{server.port}/", timeout=5)
    async with direct_session() as session:
        with pytest.raises(ConnectError, match=r"connection refused"):
            await session.get(f"http://127.0.0.1:{free_port()}/", timeout=5)
        with pytest.raises(HttpClientError, match="not an http"):
            await session.get("ftp://127.0.0.1/", timeout=5)


async def test_close_ends_idle_connections_and_later_requests() -> None:
    async with serving(keep_alive) as server:
        session = direct_session()
        await session.get(f"http://127.0.0.1:{server.port}/", timeout=5)
        await session.close()
        with pytest.raises(HttpClientError, match="closed"):
            await session.get(f"http://127.0.0.1:{server.port}/", timeout=5)
        async with asyncio.timeout(2):  # the server sees the idle connection end
            while server.ended == 0:
                await asyncio.sleep(0.01)
        assert [len(requests) for requests in server.connections] == [1]


def _tls_server(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for "localhost" issued by a new CA, and the CA's PEM file."""
    ca_key, leaf_key = pki.generate_key(), pki.generate_key()
    ca = pki.make_root_ca(ca_key, "flm test CA", days=1)
    leaf = pki.issue_leaf(ca_key, ca, leaf_key, ["localhost"], days=1)
    (tmp_path / "ca.pem").write_bytes(pki.certs_to_pem([ca]))
    (tmp_path / "leaf.pem").write_bytes(pki.certs_to_pem([leaf]))
    (tmp_path / "leaf.key").write_bytes(pki.key_to_pem(leaf_key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    return context, tmp_path / "ca.pem"


async def test_https_is_verified_against_the_trust_store_with_the_url_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, ca_pem = _tls_server(tmp_path)
    async with serving(keep_alive, tls=context) as server:
        url = f"https://localhost:{server.port}/health"
        async with direct_session() as session:
            with pytest.raises(ConnectError, match=r"^TLS certificate not accepted \("):
                await session.get(url, timeout=5)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_pem))
        async with direct_session() as session:
            assert (await session.get(url, timeout=5)).body == b"ok"
            with pytest.raises(ConnectError, match="TLS certificate not accepted"):
                await session.get(f"https://127.0.0.1:{server.port}/", timeout=5)
