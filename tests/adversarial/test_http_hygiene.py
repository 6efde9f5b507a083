"""Class 9 (HTTP hygiene), the protocol items: trailers, versions, header bytes, HEAD.

Each is sent as raw bytes to the real gateway in front of a recording engine:
- a request with trailers is refused (400) and leaves no flow counted in
  `flm_requests_in_flight` (it used to crash its connection and stay counted forever);
- `HTTP/9.9` and every version but 1.0 and 1.1 get 505;
- a header with a bare CR, a NUL, another control character, or an obs-fold line gets
  400 and the engine never sees it; HTAB and bytes >= 0x80 (obs-text) stay allowed;
- a HEAD answer carries no body, whoever made it (the gateway's own 401/404/200 or an
  engine's).
The body items of class 9 live with their classes: deep JSON and bounded echoes in
`test_body_parsing.py`, the request log and control characters in outputs in
`test_log_safety.py`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.adversarial.cli import run_cli
from tests.adversarial.harness import (
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    sources,
)
from tests.support.gateway_process import GatewayProcess, free_port
from tests.support.recording_engine import RecordingEngine

CONFIG = """\
server: {state_dir: "{state_dir}"}
admin: {bind: "127.0.0.1:ADMIN_PORT"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: api-key}
  - {name: native, bind: "127.0.0.1:NATIVE_PORT", auth: none, passthrough: alpha}
engines:
  - {name: alpha, kind: ollama, url: "ENGINE_URL"}
routes:
  - {model: tiny, engine: alpha}
"""
CHAT = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}'
_sources = sources(45)


@dataclass
class Stack:
    gateway: GatewayProcess
    engine: RecordingEngine
    key: str
    admin: int
    native: int

    @property
    def port(self) -> int:
        return port_of(self.gateway)

    def send(self, data: bytes, port: int | None = None) -> bytes:
        """Raw bytes in, everything the gateway sends until it closes."""
        with socket.create_connection(("127.0.0.1", port or self.port), timeout=10) as sock:
            sock.sendall(data)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        return out

    def in_flight(self) -> float:
        with socket.create_connection(("127.0.0.1", self.admin), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            text = b""
            while chunk := sock.recv(65536):
                text += chunk
        (line,) = [
            line
            for line in text.decode().splitlines()
            if line.startswith("flm_requests_in_flight ")
        ]
        return float(line.split()[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    admin, native = free_port(), free_port()
    config = CONFIG.replace("ADMIN_PORT", str(admin)).replace("NATIVE_PORT", str(native))
    with (
        RecordingEngine(kind="ollama", models=("tiny",)) as engine,
        gateway_before(engine, tmp_path_factory.mktemp("hygiene"), config) as gateway,
    ):
        created = run_cli(gateway.config_path, "keys", "create", "--name", "hygiene", "--json")
        assert created.code == 0, created.stderr
        yield Stack(gateway, engine, created.json["key"], admin, native)


def chat(key: str, *extra: bytes, body: bytes = CHAT, chunked: bool = False) -> bytes:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\n" + b"".join(extra)
    )
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(body), body)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


# ---- trailers ----------------------------------------------------------------------------

TRAILERS = [
    b"0\r\nX-Checksum: abc\r\n\r\n",
    b"0\r\nContent-Length: 5\r\n\r\n",
    b"0\r\nAuthorization: Bearer flm-other\r\n\r\n",
    b"0\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
]


@pytest.mark.parametrize("trailer", TRAILERS)
def test_a_request_with_trailers_is_refused_and_uncounted(stack: Stack, trailer: bytes) -> None:
    stack.engine.clear()
    answer = exchange(stack.port, chat(stack.key, chunked=True) + trailer, source=next(_sources))
    assert_openai_error(answer, 400, code="invalid_http")
    assert stack.engine.calls() == []
    deadline = time.monotonic() + 5
    while stack.in_flight() != 0:  # every flow counted is uncounted
        assert time.monotonic() < deadline, stack.in_flight()
        time.sleep(0.1)


def test_a_chunked_request_without_trailers_is_served(stack: Stack) -> None:
    stack.engine.clear()
    answer = exchange(stack.port, chat(stack.key, chunked=True) + b"0\r\n\r\n")
    assert answer.status == 200
    (seen,) = stack.engine.calls()
    assert seen.json["model"] == "tiny" and seen.trailers == b""


# ---- versions ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["HTTP/9.9", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"])
def test_unknown_versions_get_505(stack: Stack, version: str) -> None:
    stack.engine.clear()
    data = f"GET /v1/models {version}\r\nHost: 127.0.0.1\r\n\r\n".encode()
    answer = exchange(stack.port, data, source=next(_sources))
    assert_openai_error(answer, 505, code="http_version_not_supported")
    assert answer.closed and stack.engine.calls() == []


@pytest.mark.parametrize(
    "line",
    [
        b"GET /v1/models HTTP/1.1 extra",
        b"GET  /v1/models HTTP/1.1",
        b"GET\t/v1/models\tHTTP/1.1",
        b"GET /v1/models http/1.1",
        b"GET /v1/models HTTP/1.10",
        b"GET /v1/models HTTP/11",
        b"GET /v1/models",
        b"G(T /v1/models HTTP/1.1",
    ],
)
def test_malformed_request_lines_get_400(stack: Stack, line: bytes) -> None:
    answer = exchange(stack.port, line + b"\r\nHost: 127.0.0.1\r\n\r\n", source=next(_sources))
    assert_openai_error(answer, 400, code="invalid_http")


# ---- header bytes ------------------------------------------------------------------------

BAD_HEADERS = {
    "bare CR in a value": b"X-Note: a\rb\r\n",
    "bare CR ending a value": b"X-Note: ab\r\r\n",
    "NUL in a value": b"X-Note: a\x00b\r\n",
    "NUL in a name": b"X-No\x00te: ab\r\n",
    "ESC in a value": b"X-Note: \x1b[2J\r\n",
    "DEL in a value": b"X-Note: a\x7fb\r\n",
    "vertical tab": b"X-Note: a\x0bb\r\n",
    "form feed": b"X-Note: a\x0cb\r\n",
    "obs-fold with a space": b"X-Note: a\r\n b\r\n",
    "obs-fold with a tab": b"X-Note: a\r\n\tb\r\n",
    "obs-fold continuing Content-Type": b"X-Pad: 1\r\n Content-Length: 999\r\n",
    "space before the colon": b"X-Note : ab\r\n",
    "no colon": b"X-Note ab\r\n",
    "empty name": b": ab\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_header_bytes_two_parsers_could_read_differently_get_400(stack: Stack, name: str) -> None:
    stack.engine.clear()
    for port in (stack.port, stack.native):
        answer = exchange(port, chat(stack.key, BAD_HEADERS[name]), source=next(_sources))
        assert_openai_error(answer, 400, code="invalid_http")
    assert stack.engine.calls() == []


def test_htab_and_obs_text_in_values_reach_the_engine_unchanged(stack: Stack) -> None:
    stack.engine.clear()
    extra = b"X-Note: a\tb\r\nX-Latin: caf\xe9\r\n"
    answer = exchange(stack.port, chat(stack.key, extra))
    assert answer.status == 200
    (seen,) = stack.engine.calls()
    assert seen.header("x-note") == "a\tb" and seen.header("x-latin") == "caf\xe9"


# ---- HEAD --------------------------------------------------------------------------------


def _head_only(raw: bytes) -> bytes:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, raw[:200]
    assert rest == b"", rest[:200]  # nothing after the head
    return head


@pytest.mark.parametrize(
    ("target", "auth", "status"),
    [
        ("/v1/models", False, b"401"),
        ("/v1/models", True, b"200"),
        ("/nowhere", True, b"404"),
        ("/v1/chat/completions", True, b"405"),
        ("/healthz", False, b"200"),
    ],
)
def test_a_head_answer_carries_no_body(
    stack: Stack, target: str, auth: bool, status: bytes
) -> None:
    authorization = f"Authorization: Bearer {stack.key}\r\n" if auth else ""
    data = f"HEAD {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Connection: close\r\n\r\n"
    head = _head_only(stack.send(data.encode()))
    assert head.split(b" ")[1] == status


def test_a_head_answer_from_the_engine_carries_no_body(stack: Stack) -> None:
    data = b"HEAD /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    head = _head_only(stack.send(data, stack.native))
    assert head.startswith(b"HTTP/1.1 200")


def test_keep_alive_survives_a_head_answer(stack: Stack) -> None:
    """With no body after a HEAD answer, the next answer on the connection is whole."""
    authorization = f"Authorization: Bearer {stack.key}\r\n".encode()
    data = (
        b"HEAD /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + authorization + b"\r\n"
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + authorization
        + b"Connection: close\r\n\r\n"
    )
    raw = stack.send(data)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and rest.startswith(b"HTTP/1.1 200")
    assert b'"object": "list"' in rest
