"""Class 4: the work a client can cause before it is authenticated is bounded.

Against the real gateway process (short timeouts configured, so the test waits seconds,
not minutes): request heads over the limits get 431/414 and close the connection; slow
heads and bodies get 408; idle connections are closed; a request refused on its headers
is answered at once, with `Connection: close`, without its body being read and without
`100 Continue`; a chunk over the body limit gets 413 before its data; one client cannot
hold more than its share of connections; huge heads and unread bodies cost no memory;
the open-file limit is raised at start; the memory guard recovers when an attacker
leaves; 1,100 slow connections at a 1,024-file limit lock nobody else out. Memory and
file descriptors are read from `/proc`. The engine (a recording one) sees none of it.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.adversarial.cli import run_cli
from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    parse_answer,
    port_of,
    request,
    sources,
)
from tests.support.gateway_process import GatewayProcess, free_port
from tests.support.recording_engine import RecordingEngine

CONFIG = """\
server:
  state_dir: "{state_dir}"
  body_size_limit: 64MiB
  limits: {header_timeout: 1s, body_timeout: 1s, idle_timeout: 2s, max_connections_per_client: 8}
admin: {bind: "127.0.0.1:ADMIN_PORT"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: api-key}
engines:
  - {name: alpha, kind: vllm, url: "ENGINE_URL"}
routes:
  - {model: tiny, engine: alpha}
"""
CHAT = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}'
_addresses = sources(44)
_addresses_lock = threading.Lock()


def next_source() -> str:
    """A fresh client address (threads share the generator)."""
    with _addresses_lock:
        return next(_addresses)


MiB = 1024 * 1024


@dataclass
class Stack:
    gateway: GatewayProcess
    engine: RecordingEngine
    key: str

    @property
    def port(self) -> int:
        return port_of(self.gateway)

    @property
    def pid(self) -> int:
        return self.gateway.process.pid

    def connect(self, source: str | None = None) -> socket.socket:
        sock = socket.socket()
        sock.settimeout(10)
        sock.bind((source or next_source(), 0))
        sock.connect(("127.0.0.1", self.port))
        return sock


def rss(pid: int) -> int:
    """Resident bytes of `pid` (VmRSS in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def read_all(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything until the gateway closes (True) or goes quiet for the timeout (False)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = CONFIG.replace("ADMIN_PORT", str(free_port()))
    with (
        RecordingEngine(kind="vllm", models=("tiny",)) as engine,
        gateway_before(engine, tmp_path_factory.mktemp("limits"), config) as gateway,
    ):
        created = run_cli(gateway.config_path, "keys", "create", "--name", "limits", "--json")
        assert created.code == 0, created.stderr
        yield Stack(gateway, engine, created.json["key"])


def chat_head(key: str | None, *extra: str, length: int = len(CHAT)) -> bytes:
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines += ["Content-Type: application/json", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---- request heads ---------------------------------------------------------------------

HEADS = {
    # name: (raw bytes, status, code)
    "unterminated 40 KiB head": (
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 40_000,
        431,
        "headers_too_large",
    ),
    "32 KiB head of short lines": (
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"X-A: "
        + b"b" * 4000
        + b"\r\n"
        + b"".join(b"X-%d: %s\r\n" % (n, b"c" * 4000) for n in range(8))
        + b"\r\n",
        431,
        "headers_too_large",
    ),
    "one 9 KiB header line": (
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
    "101 header lines": (
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-%d: y\r\n" % n for n in range(100))
        + b"\r\n",
        431,
        "headers_too_large",
    ),
    "9 KiB request line": (
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        414,
        "uri_too_long",
    ),
    "9 KiB request line, never ended": (b"GET /" + b"a" * 9000, 414, "uri_too_long"),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_over_the_limits_are_refused_and_closed(stack: Stack, name: str) -> None:
    data, status, code = HEADS[name]
    stack.engine.clear()
    answer = exchange(stack.port, data, source=next_source())
    assert_openai_error(answer, status, code=code)
    assert answer.closed and (answer.header("connection") or "").lower() == "close"
    assert stack.engine.calls() == []


def test_a_head_just_under_the_limits_is_served(stack: Stack) -> None:
    """The positive control: 70 lines of 300 bytes (21 KiB), an 8,000-byte URL."""
    headers = [("Authorization", f"Bearer {stack.key}")]
    headers += [(f"X-Pad-{n}", "p" * 290) for n in range(70)]
    target = "/v1/models?" + "q" * 7_900
    stack.engine.clear()
    answer = exchange(stack.port, request("GET", target, headers=headers))
    assert answer.status == 200, answer.body[:200]


def test_an_unterminated_huge_head_costs_no_memory(stack: Stack) -> None:
    before = rss(stack.pid)
    sent = 0
    with stack.connect() as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nX: ")
            chunk = b"a" * MiB
            for _ in range(64):  # the issue sent 300 MiB; the gateway stops reading at 32 KiB
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # reset once the gateway answered 431 and closed
        answer, _ = read_all(sock)
    assert parse_answer(answer).status == 431
    assert sent < 64 * MiB  # the gateway closed the connection long before the end
    assert rss(stack.pid) - before < 8 * MiB


# ---- time ------------------------------------------------------------------------------


def test_a_slow_head_gets_408_then_the_connection_closes(stack: Stack) -> None:
    for partial in (b"GET /v1/models HTTP/1.1\r\nHost: 127", b"G", b"POST /v1/chat/completions"):
        with stack.connect() as sock:
            sock.sendall(partial)
            data, closed = read_all(sock)
        assert closed
        assert_openai_error(parse_answer(data), 408, code="request_timeout")


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(stack: Stack) -> None:
    with stack.connect() as sock:
        data, closed = read_all(sock)
    assert closed and data == b""


def test_an_idle_keep_alive_connection_is_closed(stack: Stack) -> None:
    with stack.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data, closed = read_all(sock)
    assert closed  # after idle_timeout, with nothing more to say
    assert parse_answer(data).status == 200 and data.count(b"HTTP/1.1") == 1


def test_keep_alive_requests_each_get_their_own_header_time(stack: Stack) -> None:
    """Three requests, 0.6 s apart on one connection: each head is timed from its own
    first byte, so none of them runs into a deadline the previous one started."""
    statuses = []
    with stack.connect() as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):  # the health answer is one JSON object
                data += sock.recv(65536)
            statuses.append(parse_answer(data).status)
            time.sleep(0.6)
    assert statuses == [200, 200, 200]


def test_a_body_that_stops_gets_408(stack: Stack) -> None:
    stack.engine.clear()
    with stack.connect() as sock:
        sock.sendall(chat_head(stack.key, length=len(CHAT)) + CHAT[:10])
        data, closed = read_all(sock)
    assert closed
    assert_openai_error(parse_answer(data), 408, code="request_timeout")
    assert stack.engine.calls() == []


def test_a_slow_but_steady_body_is_read(stack: Stack) -> None:
    """body_timeout is a pause between reads, not a deadline for the whole body."""
    stack.engine.clear()
    with stack.connect() as sock:
        sock.sendall(chat_head(stack.key, "Connection: close"))
        for start in range(0, len(CHAT), 20):
            sock.sendall(CHAT[start : start + 20])
            time.sleep(0.4)
        data, _ = read_all(sock)
    assert parse_answer(data).status == 200
    assert len(stack.engine.calls()) == 1


# ---- answers before the body -------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "flm-wrong"])
def test_a_request_refused_on_its_headers_is_answered_before_its_body(
    stack: Stack, key: str | None
) -> None:
    before = rss(stack.pid)
    with stack.connect() as sock:
        sock.sendall(chat_head(key, length=30 * MiB) + b"x" * 1024)  # 1 KiB of 30 MiB
        data, closed = read_all(sock)
    answer = parse_answer(data)
    assert_openai_error(answer, 401)
    assert answer.interim == []  # no 100 Continue either
    assert (answer.header("connection") or "").lower() == "close" and closed
    assert rss(stack.pid) - before < 8 * MiB


def test_100_continue_only_after_the_request_is_accepted(stack: Stack) -> None:
    with stack.connect() as sock:  # refused: the answer, never a 100
        sock.sendall(chat_head(None, "Expect: 100-continue", length=5 * MiB))
        data, closed = read_all(sock)
    refused = parse_answer(data)
    assert refused.interim == [] and refused.status == 401 and closed
    stack.engine.clear()
    with stack.connect() as sock:  # accepted: 100 first, then the body is read
        sock.sendall(chat_head(stack.key, "Expect: 100-continue", "Connection: close"))
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(CHAT)
        data, _ = read_all(sock)
    assert parse_answer(interim + data).status == 200
    assert len(stack.engine.calls()) == 1


def test_many_unread_bodies_cost_no_memory(stack: Stack) -> None:
    """20 clients at once each announce 30 MiB and push what the socket takes."""
    before = rss(stack.pid)
    statuses: list[int] = []

    def client() -> None:
        with stack.connect() as sock:
            with contextlib.suppress(OSError):
                sock.sendall(chat_head(None, length=30 * MiB))
                sock.sendall(b"x" * (4 * MiB))
            data, _ = read_all(sock)
        statuses.append(parse_answer(data, head_only=True).status)

    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [401] * 20
    assert rss(stack.pid) - before < 16 * MiB


# ---- chunked bodies --------------------------------------------------------------------


@pytest.mark.parametrize("size_line", [b"4000001", b"FFFFFFFFFFFF", b"5000000;ext=1"])
def test_a_chunk_larger_than_the_body_limit_gets_413_before_its_data(
    stack: Stack, size_line: bytes
) -> None:
    stack.engine.clear()
    head = chat_head(stack.key).replace(
        b"Content-Length: %d" % len(CHAT), b"Transfer-Encoding: chunked"
    )
    with stack.connect() as sock:
        sock.sendall(head + size_line + b"\r\nabc")  # 3 bytes of a chunk over 64 MiB
        data, closed = read_all(sock)
    assert_openai_error(parse_answer(data), 413, code="request_too_large")
    assert closed and stack.engine.calls() == []


def test_an_endless_chunk_size_line_is_refused(stack: Stack) -> None:
    head = chat_head(stack.key).replace(
        b"Content-Length: %d" % len(CHAT), b"Transfer-Encoding: chunked"
    )
    with stack.connect() as sock:
        with contextlib.suppress(OSError):
            sock.sendall(head + b"1;" + b"e" * 64_000)
        data, closed = read_all(sock)
    assert_openai_error(parse_answer(data), 400)
    assert closed


def test_bytes_pipelined_behind_a_request_are_capped(stack: Stack) -> None:
    with stack.connect() as sock:
        with contextlib.suppress(OSError):
            sock.sendall(chat_head(stack.key) + CHAT + b"GET / HTTP/1.1\r\n" + b"p" * 200_000)
        data, closed = read_all(sock)
    assert closed  # the flood is dropped, not buffered: the request is answered, then closed
    assert parse_answer(data).status == 200 and data.count(b"HTTP/1.1 ") == 1


# ---- connections -------------------------------------------------------------------------


def test_one_client_holds_at_most_its_share_of_connections(stack: Stack) -> None:
    source = next_source()
    held = [stack.connect(source) for _ in range(12)]
    try:
        time.sleep(0.3)
        closed = 0
        for sock in held:
            sock.settimeout(0.2)
            try:
                closed += sock.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed == 4  # the cap is 8: the 9th to 12th were closed unread
        other = exchange(stack.port, request("GET", "/healthz"), source=next_source())
        assert other.status == 200  # another client is not affected
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    again = exchange(stack.port, request("GET", "/healthz"), source=source)
    assert again.status == 200  # the share comes back as connections close


def test_refusals_are_counted_in_the_metrics(stack: Stack) -> None:
    metrics = stack.gateway.config_path.read_text().split('admin: {bind: "')[1].split('"')[0]
    with socket.create_connection(tuple(metrics.rsplit(":", 1))) as sock:  # type: ignore[arg-type]
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        text, _ = read_all(sock)
    lines = [line for line in text.decode().splitlines() if line.startswith("flm_protocol")]
    seen = {line.split("{")[1].split(",")[0] for line in lines}
    assert {'status="408"', 'status="413"', 'status="414"', 'status="431"'} <= seen
    assert 'status="closed"' in seen


# ---- the process -------------------------------------------------------------------------


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


SLOW_CONFIG = """\
server:
  state_dir: "{state_dir}"
  limits: {header_timeout: 30s}
admin: {enabled: false}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: none}
engines:
  - {name: alpha, kind: vllm, url: "ENGINE_URL"}
routes:
  - {model: tiny, engine: alpha}
"""


def test_the_open_file_limit_is_raised_at_start(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 1024:
        pytest.fail(f"this machine's hard open-file limit is {hard}: the test needs more")
    with (
        RecordingEngine(kind="vllm", models=("tiny",)) as engine,
        gateway_before(engine, tmp_path, SLOW_CONFIG, open_files=(1024, hard)) as gateway,
    ):
        assert _open_files_limit(gateway.process.pid) == (hard, hard)
        assert "open-file limit raised from 1024" in gateway.log


def test_1100_slow_connections_at_a_1024_file_limit_lock_nobody_else_out(tmp_path: Path) -> None:
    """The issue's attack: one address opens 1,100 connections and never finishes a head,
    against a gateway whose hard open-file limit is 1,024 (so raising it cannot help)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this test holds 1,100 sockets
    attacker = next_source()
    held: list[socket.socket] = []
    try:
        with (
            RecordingEngine(kind="vllm", models=("tiny",)) as engine,
            gateway_before(engine, tmp_path, SLOW_CONFIG, open_files=(1024, 1024)) as gateway,
        ):
            pid, port = gateway.process.pid, port_of(gateway)
            log_before = gateway.log_path.stat().st_size
            for _ in range(1100):
                sock = socket.socket()
                sock.bind((attacker, 0))
                sock.settimeout(5)
                try:
                    sock.connect(("127.0.0.1", port))
                    sock.sendall(b"GET / HTTP/1.1\r\n")
                except OSError:
                    sock.close()
                    continue
                held.append(sock)
            time.sleep(0.5)
            fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
            assert fds < 128 + 64  # its share (128) and the gateway's own files
            for _ in range(5):
                answer: Answer = exchange(port, request("GET", "/healthz"), source=next_source())
                assert answer.status == 200
            grown = gateway.log_path.stat().st_size - log_before
            assert grown < 16 * 1024, grown  # one line per refusal reason, not a flood
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


MEMORY_CONFIG = """\
server:
  state_dir: "{state_dir}"
  body_size_limit: 40MiB
admin: {enabled: false}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: none}
engines:
  - {name: alpha, kind: vllm, url: "ENGINE_URL"}
routes:
  - {model: tiny, engine: alpha}
security:
  resources: {max_process_memory: 320MiB, sample_interval: 500ms, retry_after: 1s}
"""


def test_the_memory_guard_recovers_when_the_attacker_leaves(tmp_path: Path) -> None:
    """Eight 30 MiB uploads at once push the gateway past its memory threshold; once they
    are answered, what they used is collected and handed back, and the guard lets
    requests in again (before, RSS stayed at its peak and every request got 503)."""
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"a" * (30 * MiB)
    body += b'"}]}'
    with (
        RecordingEngine(kind="vllm", models=("tiny",)) as engine,
        gateway_before(engine, tmp_path, MEMORY_CONFIG) as gateway,
    ):
        pid, port = gateway.process.pid, port_of(gateway)
        idle = rss(pid)
        statuses: list[int] = []

        def upload() -> None:
            data = request(
                "POST",
                "/v1/chat/completions",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            statuses.append(exchange(port, data, source=next_source(), timeout=60).status)

        threads = [threading.Thread(target=upload) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        peak = rss(pid)
        assert statuses.count(200) >= 1 and peak > idle + 100 * MiB
        deadline = time.monotonic() + 30
        ordinary = request(
            "POST", "/v1/chat/completions", body=CHAT, headers={"Content-Type": "application/json"}
        )
        while (answer := exchange(port, ordinary, source=next_source())).status == 503:
            assert time.monotonic() < deadline, f"still shedding at {rss(pid) >> 20} MiB"
            time.sleep(0.5)
        assert answer.status == 200
        assert rss(pid) < idle + 48 * MiB, (idle >> 20, peak >> 20, rss(pid) >> 20)
