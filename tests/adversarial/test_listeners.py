"""Class 2: a flow belongs to the socket it arrived on, host and port.

Three listeners share one port on three loopback addresses: `keyed` (127.0.0.1, api-key),
`open` (127.0.0.2, keyless passthrough to the engine) and `scoped` (127.0.0.3, api-key,
OpenAI API only). Before the fix the listener was looked up by port alone, so keyless
requests to `keyed` were served with `open`'s policy. Every way a request could claim
another listener (its Host, an absolute-form target, X-Forwarded-Host, the same
connection, a pipelined second request) must leave it with the listener of its socket.
`validate` refuses binds whose connections could belong to two listeners.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    request,
    sources,
)
from tests.support.gateway_process import ROOT, free_port
from tests.support.recording_engine import RecordingEngine

SECRET = "flm-listeners-test-secret-0123456789abcdefghijklmnop"
KEY_HASH = "sha256:" + __import__("hashlib").sha256(SECRET.encode()).hexdigest()
CONFIG = f"""\
server: {{state_dir: "{{state_dir}}"}}
admin: {{enabled: false}}
listeners:
  - {{name: keyed, bind: "127.0.0.1:{{port}}", auth: api-key}}
  - {{name: open, bind: "127.0.0.2:{{port}}", auth: none, passthrough: engine}}
  - {{name: scoped, bind: "127.0.0.3:{{port}}", auth: api-key}}
engines:
  - {{name: engine, kind: ollama, url: "ENGINE_URL"}}
security:
  keys:
    - {{id: only-keyed, hash: "{KEY_HASH}", scopes: {{listeners: [keyed]}}}}
"""
_source = sources(82)


@dataclass
class Shared:
    engine: RecordingEngine
    port: int

    def send(self, address: str, data: bytes) -> Answer:
        self.engine.clear()
        return exchange(self.port, data, host=address, source=next(_source))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    with (
        RecordingEngine(kind="ollama") as engine,
        gateway_before(engine, tmp_path_factory.mktemp("listeners"), CONFIG) as gateway,
    ):
        yield Shared(engine, int(gateway.url.rsplit(":", 1)[1]))


def test_each_socket_has_its_own_policy(shared: Shared) -> None:
    port = shared.port
    # open: keyless passthrough reaches the engine, path unchanged
    answer = shared.send("127.0.0.2", request("GET", "/api/show", host=f"127.0.0.2:{port}"))
    assert answer.status == 200
    assert [s.path for s in shared.engine.calls()] == ["/api/show"]
    # keyed, scoped: the same keyless request is 401 and reaches nothing
    for address in ("127.0.0.1", "127.0.0.3"):
        for method, path in (("GET", "/api/show"), ("GET", "/v1/models"), ("POST", "/api/pull")):
            answer = shared.send(address, request(method, path, host=f"{address}:{port}"))
            assert_openai_error(answer, 401, code="invalid_api_key")
            assert shared.engine.calls() == []


def test_a_key_scoped_to_one_listener_works_only_there(shared: Shared) -> None:
    port = shared.port
    auth = [("Authorization", f"Bearer {SECRET}")]
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    answer = shared.send(
        "127.0.0.1",
        request(
            "POST",
            "/v1/chat/completions",
            headers=[("Host", f"127.0.0.1:{port}"), *auth],
            json_body=chat,
        ),
    )
    assert answer.status == 200
    assert [s.path for s in shared.engine.calls()] == ["/v1/chat/completions"]
    answer = shared.send(
        "127.0.0.3",
        request(
            "POST",
            "/v1/chat/completions",
            headers=[("Host", f"127.0.0.3:{port}"), *auth],
            json_body=chat,
        ),
    )
    assert_openai_error(answer, 403, code="key_not_allowed_here")
    assert shared.engine.calls() == []


CLAIMS = [
    # a Host naming the keyless listener: another listener's name is misdirected
    ([("Host", "127.0.0.2:{port}")], 421),
    ([("Host", "127.0.0.2")], 421),
    # a forwarding header is never read to choose a listener
    ([("Host", "127.0.0.1:{port}"), ("X-Forwarded-Host", "127.0.0.2:{port}")], 401),
    ([("Host", "127.0.0.1:{port}"), ("X-Forwarded-For", "127.0.0.2")], 401),
    ([("Host", "127.0.0.1:{port}"), ("Forwarded", "host=127.0.0.2:{port}")], 401),
    ([("Host", "127.0.0.1:{port}"), ("X-Original-Host", "127.0.0.2")], 401),
    # two Host headers, one of them the keyless listener's
    ([("Host", "127.0.0.1:{port}"), ("Host", "127.0.0.2:{port}")], 400),
    ([("Host", "127.0.0.2:{port}"), ("Host", "127.0.0.1:{port}")], 400),
]


@pytest.mark.parametrize(("headers", "status"), CLAIMS)
def test_no_header_moves_a_request_to_another_listener(
    shared: Shared, headers: list[tuple[str, str]], status: int
) -> None:
    port = shared.port
    filled = [(name, value.format(port=port)) for name, value in headers]
    for method, path in (("GET", "/api/tags"), ("POST", "/api/pull"), ("GET", "/v1/models")):
        answer = shared.send("127.0.0.1", request(method, path, headers=filled))
        assert_openai_error(answer, status)
        assert shared.engine.calls() == []


def test_absolute_form_and_http_1_0_stay_on_their_socket(shared: Shared) -> None:
    port = shared.port
    attempts = [
        f"GET http://127.0.0.2:{port}/api/tags HTTP/1.1\r\n\r\n",
        f"GET http://127.0.0.2:{port}/api/tags HTTP/1.1\r\nHost: 127.0.0.2:{port}\r\n\r\n",
        f"GET http://127.0.0.2:{port}/api/tags HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
        f"GET http://127.0.0.2:{port}/api/tags HTTP/1.0\r\n\r\n",
        "GET /api/tags HTTP/1.0\r\n\r\n",
        f"GET http://127.0.0.1:{port}/api/tags HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
    ]
    statuses = []
    for attempt in attempts:
        answer = shared.send("127.0.0.1", attempt.encode())
        assert_openai_error(answer, answer.status)
        statuses.append(answer.status)
        assert shared.engine.calls() == []
    assert statuses == [421, 421, 400, 421, 401, 401]


def test_one_connection_never_changes_listener(shared: Shared) -> None:
    port = shared.port
    # Pipelined on one keyed connection: the second request names the open listener.
    pipelined = request(
        "GET", "/healthz", host=f"127.0.0.1:{port}", headers=[("Connection", "keep-alive")]
    ) + request("GET", "/api/tags", host=f"127.0.0.1:{port}")
    shared.engine.clear()
    answer = exchange(port, pipelined, host="127.0.0.1", source=next(_source))
    assert answer.status == 200  # the health check
    assert b" 401 " in answer.raw and shared.engine.calls() == []
    claimed = request(
        "GET", "/healthz", host=f"127.0.0.1:{port}", headers=[("Connection", "keep-alive")]
    ) + request("GET", "/api/tags", host=f"127.0.0.2:{port}")
    answer = exchange(port, claimed, host="127.0.0.1", source=next(_source))
    assert b" 421 " in answer.raw and shared.engine.calls() == []


def test_the_open_listener_is_not_widened_either(shared: Shared) -> None:
    port = shared.port
    for host in ("127.0.0.1:{port}", "127.0.0.3:{port}", "rebind.attacker.example:{port}"):
        answer = shared.send("127.0.0.2", request("GET", "/api/show", host=host.format(port=port)))
        assert_openai_error(answer, 421, code="misdirected_request")
        assert shared.engine.calls() == []


# ---- validate: binds whose connections could belong to two listeners ---------------

OVERLAPS = [
    ("0.0.0.0:{port}", "127.0.0.1:{port}", "overlaps"),
    ("127.0.0.1:{port}", "0.0.0.0:{port}", "overlaps"),
    ("[::]:{port}", "0.0.0.0:{port}", "overlaps"),
    ("[::]:{port}", "127.0.0.1:{port}", "overlaps"),
    ("[::]:{port}", "[::1]:{port}", "overlaps"),
    ("[::1]:{port}", "[0:0:0:0:0:0:0:1]:{port}", "already bound"),
    ("127.0.0.1:{port}", "127.0.0.1:{port}", "already bound"),
    ("localhost:{port}", "127.0.0.1:{port}", "overlaps"),
    ("localhost:{port}", "[::1]:{port}", "overlaps"),
    ("localhost:{port}", "localhost:{port}", "already bound"),
    ("127.0.0.1:{port}", "LOCALHOST:{port}", "not an IP address"),
    ("127.0.0.1:{port}", "localhost.:{port}", "not an IP address"),
    ("127.0.0.1:{port}", "gateway.local:{port}", "not an IP address"),
    ("127.0.0.1:{port}", "[::ffff:127.0.0.1]:{port}", "IPv4-mapped"),
]


def validate(tmp_path: Path, first: str, second: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "flm.yaml"
    config.write_text(
        "listeners:\n"
        f'  - name: first\n    bind: "{first}"\n    auth: api-key\n'
        f'  - name: second\n    bind: "{second}"\n    auth: none\n'
        'engines:\n  - {name: engine, url: "http://127.0.0.1:9"}\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "flm_gateway", "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("first", "second", "says"), OVERLAPS)
def test_validate_refuses_ambiguous_binds_naming_both(
    tmp_path: Path, first: str, second: str, says: str
) -> None:
    port = free_port()
    result = validate(tmp_path, first.format(port=port), second.format(port=port))
    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout + result.stderr
    (line,) = [line for line in output.splitlines() if "listeners[1].bind" in line]
    assert f"{tmp_path / 'flm.yaml'}:6:" in line and says in line, line
    if says != "not an IP address" and says != "IPv4-mapped":
        assert "'second'" in line and "listeners[0] ('first', " in line, line
        assert f"{tmp_path / 'flm.yaml'}:3:" in line, line  # where the first one is


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("127.0.0.1:{port}", "127.0.0.2:{port}"),
        ("0.0.0.0:{port}", "[::1]:{port}"),  # 0.0.0.0 is IPv4 only
        ("127.0.0.1:{port}", "[::1]:{port}"),
        ("[::1]:{port}", "[::2]:{port}"),
    ],
)
def test_validate_accepts_binds_that_cannot_be_confused(
    tmp_path: Path, first: str, second: str
) -> None:
    port = free_port()
    result = validate(tmp_path, first.format(port=port), second.format(port=port))
    problems = [line for line in result.stdout.splitlines() if ".bind:" in line]
    assert not any("overlaps" in line or "already bound" in line for line in problems), problems
