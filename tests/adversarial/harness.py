"""What every adversarial test needs: a real gateway in front of a recording engine, raw bytes.

- `gateway_before(engine, tmp_path, config)` runs the real gateway process with
  `config` (`{port}`, `{state_dir}` and `ENGINE_URL` filled in) in front of a
  `RecordingEngine` (see `tests/support/recording_engine.py`).
- `exchange(port, data)` sends raw bytes and parses the first answer leniently
  (`Answer`), so a test can send what no HTTP library would.
- `assert_openai_error(answer, status)` checks OpenAI's error shape, the one shape
  every refusal must have.
- `sources()` yields fresh 127.0.x.y client addresses, so an attempt that trips
  auto-block or a rate limit does not decide the next one.

A policy test here has three parts: the attack variants, the answer each gets, and
what the engine saw (`engine.calls()`): nothing, or exactly what was allowed.
"""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.gateway_process import GatewayProcess, run_gateway
from tests.support.recording_engine import RecordingEngine

ERROR_KEYS = {"message", "type", "param", "code"}


def sources(third_octet: int) -> Iterator[str]:
    """Fresh loopback client addresses 127.<third_octet>.x.y, one per attack."""
    for n in itertools.count(1):
        yield f"127.{third_octet}.{n // 250}.{n % 250 + 1}"


@dataclass
class Answer:
    """One HTTP answer as the client got it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes
    closed: bool = False
    """The gateway closed the connection after this answer."""
    interim: list[int] = field(default_factory=list)
    """Statuses of 1xx answers that came before this one (e.g. [100])."""

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return values[-1] if values else None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def parse_answer(raw: bytes, *, head_only: bool = False) -> Answer:
    """The first final answer in `raw` (1xx answers are noted in `interim`)."""
    interim: list[int] = []
    rest = raw
    while True:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"no complete answer in {raw[:300]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = [
            tuple(s.strip() for s in line.split(":", 1)) for line in lines[1:] if ":" in line
        ]
        if 100 <= status < 200:
            interim.append(status)
            continue
        answer = Answer(status, headers, b"", raw, interim=interim)  # type: ignore[arg-type]
        break
    if head_only:
        return answer
    length = answer.header("content-length")
    if (answer.header("transfer-encoding") or "").lower() == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        answer.body = body
    elif length is not None:
        answer.body = rest[: int(length)]
    else:
        answer.body = rest
    return answer


def exchange(
    port: int,
    data: bytes,
    *,
    source: str = "127.0.0.1",
    host: str = "127.0.0.1",
    timeout: float = 10.0,
    head_only: bool = False,
) -> Answer:
    """Send `data` raw from `source`; read until the gateway closes or goes quiet."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.bind((source if family == socket.AF_INET else "::1", 0))
        sock.connect((host, port))
        sock.sendall(data)
        chunks: list[bytes] = []
        closed = False
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
            if _complete(b"".join(chunks)):
                sock.settimeout(0.3)  # a complete answer: wait briefly for the close
    answer = parse_answer(b"".join(chunks), head_only=head_only)
    answer.closed = closed
    return answer


def _complete(raw: bytes) -> bool:
    try:
        answer = parse_answer(raw)
    except (AssertionError, ValueError, IndexError):
        return False
    length = answer.header("content-length")
    if length is not None:
        return len(answer.body) >= int(length)
    return raw.endswith(b"0\r\n\r\n")


def request(
    method: str,
    target: str,
    *,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    json_body: Any = None,
    host: str = "127.0.0.1",
) -> bytes:
    """A well-formed HTTP/1.1 request (Connection: close) around the given pieces."""
    if json_body is not None:
        body = json.dumps(json_body).encode()
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in pairs}
    if "host" not in names:
        pairs.insert(0, ("Host", host))
    if json_body is not None and "content-type" not in names:
        pairs.append(("Content-Type", "application/json"))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        pairs.append(("Content-Length", str(len(body))))
    if "connection" not in names:
        pairs.append(("Connection", "close"))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in pairs)
    return head.encode("latin-1") + b"\r\n" + (body or b"")


def assert_openai_error(
    answer: Answer, status: int, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """`answer` is OpenAI's error shape with `status` (and `code`/`param` when given)."""
    assert answer.status == status, (answer.status, answer.body[:300])
    assert (answer.header("content-type") or "").startswith("application/json"), answer.headers
    payload = answer.json
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return dict(error)


@contextmanager
def gateway_before(
    engine: RecordingEngine, tmp_path: Path, config: str, **kwargs: Any
) -> Iterator[GatewayProcess]:
    """The real gateway with `config` (`ENGINE_URL` = the recording engine's URL)."""
    with run_gateway(config.replace("ENGINE_URL", engine.url), tmp_path, **kwargs) as gateway:
        yield gateway


def port_of(gateway: GatewayProcess) -> int:
    return int(gateway.url.rsplit(":", 1)[1])
