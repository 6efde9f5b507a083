"""Class 12: IPv6 listeners start, serve and apply their policy.

The gateway binds an API listener on `[::1]` (api-key) and one on `127.0.0.1` and
`[::1]` of the same port (both keyless, two listeners: two sockets), and the admin
listener on `[::1]`. Real clients (curl, the openai SDK) and raw sockets talk to them
over IPv6; the recording engine proves what reached it. Logs print IPv6 in brackets.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    request,
)
from tests.support.gateway_process import GatewayProcess, free_port
from tests.support.recording_engine import RecordingEngine

SECRET = "flm-ipv6-test-secret-0123456789abcdefghijklmnopqrstu"
CONFIG = f"""\
server: {{state_dir: "{{state_dir}}"}}
admin: {{bind: "[::1]:ADMIN"}}
listeners:
  - {{name: v6, bind: "[::1]:{{port}}", auth: api-key}}
  - {{name: twin4, bind: "127.0.0.1:TWIN", auth: none}}
  - {{name: twin6, bind: "[0:0::1]:TWIN", auth: none, hosts: [gateway.v6.test]}}
engines:
  - {{name: engine, kind: ollama, url: "ENGINE_URL"}}
security:
  keys:
    - {{id: v6-key, hash: "sha256:{hashlib.sha256(SECRET.encode()).hexdigest()}"}}
"""
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def ipv6_loopback_available() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback")


@dataclass
class Six:
    engine: RecordingEngine
    gateway: GatewayProcess
    port: int
    twin: int
    admin: int

    def send(self, data: bytes, port: int | None = None, host: str = "::1") -> Answer:
        self.engine.clear()
        return exchange(port or self.port, data, host=host)


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Six]:
    port, twin, admin = free_port(), free_port(), free_port()
    config = CONFIG.replace("TWIN", str(twin)).replace("ADMIN", str(admin))
    with (
        RecordingEngine(kind="ollama") as engine,
        gateway_before(
            engine,
            tmp_path_factory.mktemp("ipv6"),
            config,
            port=port,
            health_url=f"http://[::1]:{port}/healthz",
        ) as gateway,
    ):
        yield Six(engine, gateway, port, twin, admin)


def test_the_ipv6_listener_serves_raw_http_with_its_policy(six: Six) -> None:
    host = f"[::1]:{six.port}"
    answer = six.send(request("POST", "/v1/chat/completions", host=host, json_body=CHAT))
    assert_openai_error(answer, 401, code="invalid_api_key")
    assert six.engine.calls() == []
    auth = [("Host", host), ("Authorization", f"Bearer {SECRET}")]
    answer = six.send(request("POST", "/v1/chat/completions", headers=auth, json_body=CHAT))
    assert answer.status == 200 and answer.json["choices"][0]["message"]["content"] == "recorded"
    (seen,) = six.engine.calls()
    assert seen.path == "/v1/chat/completions"
    assert seen.header_values("host") == [f"127.0.0.1:{six.engine.port}"]
    assert seen.header("authorization") is None  # the client's key never reaches the engine


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("[::1]:{port}", 200),
        ("[::1]", 200),
        ("[0:0:0:0:0:0:0:1]:{port}", 200),  # another spelling of the same address
        ("[0::1]", 200),
        ("localhost:{port}", 200),
        ("[::2]:{port}", 421),
        ("[::ffff:127.0.0.1]:{port}", 421),
        ("127.0.0.1:{port}", 421),  # the other family: another socket
        ("[::]:{port}", 421),
        ("ip6-localhost:{port}", 421),
        ("::1:{port}", 400),  # brackets are required
        ("[::1:{port}", 400),
        ("[::1]]:{port}", 400),
        ("[::1%25lo]:{port}", 400),
        ("[::1%lo]:{port}", 400),
        ("[:::1]:{port}", 400),
        ("[1::2::3]:{port}", 400),
        ("[::1]:{port}:1", 400),
    ],
)
def test_ipv6_hosts(six: Six, host: str, status: int) -> None:
    headers = [("Host", host.format(port=six.port)), ("Authorization", f"Bearer {SECRET}")]
    answer = six.send(request("GET", "/api/nothing", headers=headers))
    if status == 200:  # the OpenAI API answers unknown paths itself: 404, engine untouched
        assert_openai_error(answer, 404, code="unknown_url")
        return
    assert_openai_error(answer, status)
    assert six.engine.calls() == []


def test_two_listeners_on_one_port_one_per_family(six: Six) -> None:
    twin = six.twin
    v4 = six.send(request("GET", "/v1/models", host=f"127.0.0.1:{twin}"), twin, "127.0.0.1")
    v6 = six.send(request("GET", "/v1/models", host=f"[::1]:{twin}"), twin, "::1")
    assert v4.status == v6.status == 200
    # Each socket has its own names: only twin6 lists gateway.v6.test.
    named = request("GET", "/v1/models", host=f"gateway.v6.test:{twin}")
    assert six.send(named, twin, "::1").status == 200
    assert_openai_error(six.send(named, twin, "127.0.0.1"), 421, code="misdirected_request")
    # And a request never borrows the other family's listener by naming it.
    assert_openai_error(
        six.send(request("GET", "/v1/models", host=f"127.0.0.1:{twin}"), twin, "::1"), 421
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_over_ipv6(six: Six) -> None:
    six.engine.clear()
    result = subprocess.run(
        [
            "curl", "-sS", "-g", "--max-time", "10",
            "-H", f"Authorization: Bearer {SECRET}",
            "-H", "Content-Type: application/json",
            "-d", json.dumps(CHAT),
            f"http://[::1]:{six.port}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "recorded"
    assert [s.path for s in six.engine.calls()] == ["/v1/chat/completions"]


def test_the_openai_sdk_over_ipv6(six: Six) -> None:
    openai = pytest.importorskip("openai")
    six.engine.clear()
    client = openai.OpenAI(base_url=f"http://[::1]:{six.port}/v1", api_key=SECRET, max_retries=0)
    try:
        models = [model.id for model in client.models.list()]
        completion = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}]
        )
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            if chunk.choices
        )
    finally:
        client.close()
    assert models == ["tiny"]
    assert completion.choices[0].message.content == "recorded"
    assert streamed == "recorded"
    assert [s.path for s in six.engine.calls()] == ["/v1/chat/completions"] * 2


def test_admin_listener_on_ipv6(six: Six) -> None:
    answer = exchange(six.admin, request("GET", "/healthz", host=f"[::1]:{six.admin}"), host="::1")
    assert answer.status == 200 and answer.json == {"status": "ok"}
    metrics = exchange(six.admin, request("GET", "/metrics", host=f"[::1]:{six.admin}"), host="::1")
    assert metrics.status == 200 and b"flm_" in metrics.body


def test_logs_print_ipv6_in_brackets(six: Six) -> None:
    log = six.gateway.log
    assert f"listening on [::1]:{six.port} (v6, local-http)" in log
    assert f"listening on [::1]:{six.twin} (twin6, local-http)" in log
    assert f"admin endpoints on http://[::1]:{six.admin}" in log
