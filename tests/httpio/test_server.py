"""`httpio.server` on real sockets: curl, raw exchanges for what curl will not send."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from flm_gateway.httpio.server import HttpServer, Request, Response

IDLE = 1.0


@dataclass
class Served:
    server: HttpServer
    port: int
    seen: list[Request] = field(default_factory=list)


async def _handler(seen: list[Request], request: Request) -> Response:
    seen.append(request)
    if request.path == "/boom":
        raise RuntimeError("secret-detail in /srv/flm/handler.py")
    if request.path == "/bad-header":
        return Response(200, b"x", (("X-Bad", "a\r\nInjected: yes"),))
    if request.path == "/sized":
        return Response(200, b"hello", (("Content-Length", "999"), ("X-Kept", "1")))
    if request.path == "/slow":
        await asyncio.sleep(30)
    return Response.text(200, f"{request.method} {request.target} {request.host}\n")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        return await _handler(seen, request)

    server = HttpServer(handler, idle_timeout=IDLE, max_header_bytes=4096, max_body_bytes=1024)
    await server.start("127.0.0.1", 0)
    assert server.address is not None
    yield Served(server, server.address[1], seen)
    await server.close()


async def curl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def read_response(
    reader: asyncio.StreamReader, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    pairs = (line.partition(":") for line in lines[1:] if line)
    headers = {key.strip().lower(): value.strip() for key, _, value in pairs}
    length = int(headers["content-length"])
    body = b"" if head_only else await asyncio.wait_for(reader.readexactly(length), 5)
    return status, headers, body


async def read_to_end(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    """Everything until the server closes (a reset counts as the end)."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, return all the server sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_to_end(reader)
    finally:
        writer.close()


def error_of(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    payload = json.loads(body)
    assert set(payload) == {"error"}
    return int(head.split(b" ")[1]), payload["error"]


# -- with curl ------------------------------------------------------------------------


async def test_curl_get_has_content_length_and_the_target_as_sent(served: Served) -> None:
    out = await curl("-i", f"http://127.0.0.1:{served.port}/hello?x=1&y=%20")
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK")
    assert body == f"GET /hello?x=1&y=%20 127.0.0.1:{served.port}\n"
    assert f"Content-Length: {len(body)}" in head
    assert "Content-Type: text/plain; charset=utf-8" in head
    request = served.seen[0]
    assert request.path == "/hello"
    assert (request.header("User-Agent") or "").startswith("curl/")


async def test_curl_reuses_the_connection(served: Served) -> None:
    url = f"http://127.0.0.1:{served.port}"
    out = await curl(
        "-w", "%{num_connects} ", "-o", "/dev/null", "-o", "/dev/null", f"{url}/a", f"{url}/b"
    )
    assert out.split() == ["1", "0"]
    assert [r.path for r in served.seen] == ["/a", "/b"]


async def test_curl_head_gets_the_length_and_no_body(served: Served) -> None:
    out = await curl("-I", f"http://127.0.0.1:{served.port}/h")
    assert out.startswith("HTTP/1.1 200 OK")
    assert f"Content-Length: {len(f'HEAD /h 127.0.0.1:{served.port}\n')}" in out


async def test_curl_oversized_body_is_413_json(served: Served) -> None:
    url = f"http://127.0.0.1:{served.port}/upload"
    out = await curl("-w", "\n%{http_code}", "--data-binary", "x" * 5000, url)
    body, _, code = out.rpartition("\n")
    assert code == "413"
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert served.seen == []


async def test_curl_handler_exception_is_a_generic_500(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="flm_gateway.httpio.server"):
        out = await curl("-w", "\n%{http_code}", f"http://127.0.0.1:{served.port}/boom")
    body, _, code = out.rpartition("\n")
    assert code == "500"
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert "secret" not in body and "Traceback" not in body and "/srv" not in body
    assert "secret-detail" in caplog.text and "Traceback" in caplog.text
    assert caplog.records[-1].exc_info is not None


# -- raw exchanges ----------------------------------------------------------------------


async def test_keep_alive_serves_two_requests_on_one_connection(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /one HTTP/1.1\r\nHost: h\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert (status, body, headers["content-length"]) == (200, b"GET /one h\n", "11")
    assert "connection" not in headers
    writer.write(b"GET /two HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert (status, body, headers["connection"]) == (200, b"GET /two h\n", "close")
    assert await read_to_end(reader) == b""
    writer.close()
    assert [r.target for r in served.seen] == ["/one", "/two"]


async def test_head_sends_no_body_so_the_next_answer_follows_directly(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
    writer.write(b"GET /y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    status, headers, _ = await read_response(reader, head_only=True)
    assert status == 200 and headers["content-length"] == str(len(b"HEAD /x h\n"))
    assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_small_bodies_are_drained_and_the_connection_kept(served: Served) -> None:
    raw = await exchange(
        served.port,
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789"
        b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    assert [(r.method, r.path) for r in served.seen] == [
        ("POST", "/a"),
        ("POST", "/b"),
        ("GET", "/c"),
    ]


async def test_a_chunked_body_over_the_cap_is_413(served: Served) -> None:
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    raw = await exchange(
        served.port,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk * 3
        + b"0\r\n\r\n",
    )
    status, error = error_of(raw)
    assert (status, error["code"]) == (413, "request_too_large")
    assert served.seen == []


async def test_a_declared_length_over_the_cap_is_413_before_the_body_arrives(
    served: Served,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    writer.close()


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: ten\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # the HTTP/2 preface
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
    ],
)
async def test_malformed_requests_get_400_json_and_the_connection_closes(
    served: Served, data: bytes
) -> None:
    status, error = error_of(await exchange(served.port, data))
    assert (status, error["code"]) == (400, "invalid_http")
    assert served.seen == []


async def test_a_header_block_over_the_cap_is_431_whole_or_incomplete(served: Served) -> None:
    big = b"X-Big: " + b"y" * 5000 + b"\r\n"
    whole = await exchange(served.port, b"GET / HTTP/1.1\r\nHost: h\r\n" + big + b"\r\n")
    incomplete = await exchange(served.port, b"GET / HTTP/1.1\r\nHost: h\r\n" + big * 2)
    for raw in (whole, incomplete):
        status, error = error_of(raw)
        assert (status, error["code"]) == (431, "headers_too_large")
    assert served.seen == []


async def test_slowloris_is_cut_after_the_idle_timeout(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def trickle() -> None:
        writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n")
        for i in range(100):
            await asyncio.sleep(0.1)
            writer.write(b"X-%d: a\r\n" % i)
            await writer.drain()

    trickling = asyncio.create_task(trickle())
    data = await read_to_end(reader, timeout=8)
    elapsed = loop.time() - started
    trickling.cancel()
    writer.close()
    assert data == b""  # no answer at all
    assert IDLE * 0.9 <= elapsed < IDLE + 3
    assert served.seen == []


async def test_an_idle_keep_alive_connection_is_closed(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    assert await read_to_end(reader, timeout=IDLE + 3) == b""
    writer.close()


async def test_http_1_0_and_absolute_form(served: Served) -> None:
    raw = await exchange(served.port, b"GET http://example.test/p?q=1 HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"GET /p?q=1 None\n")
    assert served.seen[0].path == "/p" and served.seen[0].host is None
    assert served.seen[0].local == ("127.0.0.1", served.port)


async def test_framing_headers_are_the_servers_and_bad_answers_are_500(served: Served) -> None:
    raw = await exchange(
        served.port, b"GET /sized HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"hello" and b"Content-Length: 5\r\n" in head and b"999" not in head
    assert b"X-Kept: 1" in head
    raw = await exchange(served.port, b"GET /bad-header HTTP/1.1\r\nHost: h\r\n\r\n")
    status, error = error_of(raw)
    assert status == 500 and error["code"] == "internal_error"
    assert b"Injected" not in raw


# -- lifecycle ------------------------------------------------------------------------


async def test_close_ends_open_connections_promptly(served: Served) -> None:
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", served.port)
    idle_writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await read_response(idle_reader))[0] == 200
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", served.port)
    busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    while len(served.seen) < 2:
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(served.server.close(), 2)
    assert loop.time() - started < 1
    assert await read_to_end(idle_reader, timeout=1) == b""
    assert await read_to_end(busy_reader, timeout=1) == b""
    assert served.server.address is None
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", served.port)
    for writer in (idle_writer, busy_writer):
        writer.close()


async def test_start_raises_oserror_on_a_taken_port() -> None:
    async def handler(request: Request) -> Response:
        return Response(204)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HttpServer(handler)
        with pytest.raises(OSError):
            await server.start("127.0.0.1", taken.getsockname()[1])
        assert server.address is None
        await server.close()


# -- the request and response values ---------------------------------------------------


def test_request_helpers() -> None:
    request = Request("GET", "/a/b?c=d?e", (("host", "gw.test:80"), ("x-two", "1"), ("x-two", "2")))
    assert request.path == "/a/b"
    assert request.host == "gw.test:80"
    assert request.header("X-Two") == "1"
    assert request.header("missing") is None


def test_response_constructors() -> None:
    text = Response.text(404, "nope\n", (("Cache-Control", "no-store"),))
    assert text.body == b"nope\n" and text.headers[0] == (
        "Content-Type",
        "text/plain; charset=utf-8",
    )
    assert ("Cache-Control", "no-store") in text.headers
    assert json.loads(Response.json(200, {"a": 1}).body) == {"a": 1}
    error = Response.error(405, "Use GET.", code="method_not_allowed")
    assert json.loads(error.body)["error"] == {
        "message": "Use GET.",
        "type": "invalid_request_error",
        "param": None,
        "code": "method_not_allowed",
    }
    assert error.headers == (("Content-Type", "application/json"),)


async def test_a_refusal_half_closes_then_drains_so_no_reset_destroys_the_answer(
    served: Served,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10000000\r\n\r\n")
    assert (await read_response(reader))[0] == 413
    assert await read_to_end(reader, timeout=1) == b""  # the server's FIN
    for _ in range(4):  # a client still sending its body is not reset
        writer.write(b"x" * 65536)
        await writer.drain()
        await asyncio.sleep(0.1)
    writer.close()
