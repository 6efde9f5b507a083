"""What clients receive, end to end: the real gateway, a fake llama.cpp speaking its real
protocol, a raw engine answering as uvicorn does, and the official `openai` SDK.

- answers and every stream chunk name the alias the client asked for; the engine and its
  upstream model are in `x-flm-engine` / `x-flm-upstream-model`;
- engine errors arrive in OpenAI's shape (SDK exceptions with the engine's message) on
  the API listener, unchanged on the passthrough listener;
- the engine's `Server` and `Keep-Alive` headers do not reach API clients;
- sent answers are counted with their status (413, 502), a cut stream as `disconnected`.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from tests.integration.ops_helpers import metric_sum, threaded_engine
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import GatewayProcess, free_port, run_gateway

UVICORN_400 = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 11\r\nserver: uvicorn\r\nconnection: close\r\n\r\nBad Request"
)

CONFIG = """\
server: {{state_dir: "{state_dir}", body_size_limit: 64KiB}}
admin: {{bind: "127.0.0.1:{admin}"}}
listeners:
  - {{name: main, bind: "127.0.0.1:{port}"}}
  - {{name: dropin, bind: "127.0.0.1:{dropin}", passthrough: llama}}
engines:
  - {{name: llama, kind: llamacpp, url: "{llama}"}}
  - {{name: flaky, kind: llamacpp, url: "{flaky}"}}
  - {{name: raw, kind: openai, url: "http://127.0.0.1:{raw}", models: [plain]}}
  - {{name: down, kind: openai, url: "http://127.0.0.1:{down}", models: [ghost]}}
routes:
  - {{model: chat, engine: llama, upstream_model: tiny}}
  - {{model: sturdy, engine: flaky, upstream_model: tiny, fallback: [llama]}}
"""


class RawEngine:
    """A TCP server answering every request with the same bytes (uvicorn's plain 400)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if data:
                        conn.sendall(self.answer)
                except OSError:
                    pass

    def __enter__(self) -> RawEngine:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.close()
        self.thread.join(5)


@dataclass
class Stack:
    gateway: GatewayProcess
    llama: FakeEngine
    port: int
    dropin: int
    admin: int

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{self.port}/v1", api_key="unused", max_retries=0
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("answers")
    with (
        threaded_engine("llamacpp", ["tiny"]) as llama,
        threaded_engine("llamacpp", ["tiny"]) as flaky,
        RawEngine(UVICORN_400) as raw,
    ):
        flaky.set_fault(status=503, paths=("/v1/chat",))  # its health checks pass
        port, dropin, admin = free_port(), free_port(), free_port()
        config = CONFIG.format(
            state_dir=tmp_path / "state",
            admin=admin,
            port=port,
            dropin=dropin,
            llama=llama.url,
            flaky=flaky.url,
            raw=raw.port,
            down=free_port(),
        )
        config = config.replace(
            "routes:\n",
            "routes:\n  - {model: plain, engine: raw}\n  - {model: ghost, engine: down}\n",
        )
        with run_gateway(
            config, tmp_path, port=port, health_url=f"http://127.0.0.1:{admin}/readyz"
        ) as gateway:
            yield Stack(gateway, llama, port, dropin, admin)


def metric(stack: Stack, name: str, **labels: str) -> float:
    return metric_sum(stack.admin, name, **labels)


def test_a_streamed_answer_names_the_alias_in_every_chunk(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    headers = raw.headers
    chunks = list(raw.parse())
    assert len(chunks) > 2
    assert {chunk.model for chunk in chunks} == {"chat"}
    assert headers["x-flm-upstream-model"] == "tiny"
    assert headers["x-flm-engine"] == "llama"
    assert "server" not in headers and "keep-alive" not in headers
    assert stack.llama.requests[-1].json["model"] == "tiny"


def test_a_json_answer_names_the_alias(stack: Stack) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().model == "chat"
    assert raw.headers["x-flm-upstream-model"] == "tiny"
    assert "server" not in raw.headers


def test_a_llamacpp_error_arrives_as_an_sdk_error_with_its_message(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        stack.client().chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-status": "500"},
        )
    assert caught.value.status_code == 500
    assert caught.value.body == {
        "message": "injected fault 500",
        "type": "server_error",
        "param": None,
        "code": "upstream_500",
    }


def test_a_streamed_request_gets_the_error_in_openai_shape_too(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client().chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-fake-status": "400"},
        )
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "injected fault 400"
    assert caught.value.body["code"] == "upstream_400"


def test_a_uvicorn_plain_text_400_arrives_as_bad_request_error(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.client().chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "hi"}]
        )
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "Bad Request"
    assert caught.value.body["type"] == "invalid_request_error"
    assert "server" not in caught.value.response.headers


def test_passthrough_keeps_the_engine_error_shape(stack: Stack) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.dropin, timeout=10)
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    connection.request(
        "POST",
        "/v1/chat/completions",
        body,
        {"content-type": "application/json", "x-fake-status": "500"},
    )
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    assert response.status == 500
    assert payload == {
        "error": {"code": 500, "message": "injected fault 500", "type": "server_error"}
    }
    assert response.getheader("keep-alive") is None


def test_sent_answers_are_counted_with_their_status(stack: Stack) -> None:
    before_413 = metric(stack, "flm_requests_total", listener="main", status="413")
    before_502 = metric(stack, "flm_requests_total", listener="main", status="502")
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    big = json.dumps({"model": "chat", "prompt": "x" * 100_000})
    connection.request("POST", "/v1/completions", big, {"content-type": "application/json"})
    assert connection.getresponse().status == 413
    connection.close()
    with pytest.raises(openai.APIStatusError) as caught:
        stack.client().chat.completions.create(
            model="ghost", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    assert metric(stack, "flm_requests_total", listener="main", status="413") == before_413 + 1
    assert metric(stack, "flm_requests_total", listener="main", status="502") == before_502 + 1
    assert metric(stack, "flm_requests_total", listener="main", status="aborted") == 0


def test_a_cut_stream_is_counted_as_disconnected(stack: Stack) -> None:
    before = metric(stack, "flm_upstream_errors_total", engine="llama", kind="disconnected")
    with pytest.raises(openai.APIError):
        stream = stack.client().chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-fake-close-after": "2"},
        )
        for _ in stream:
            pass
    assert metric(stack, "flm_upstream_errors_total", engine="llama", kind="disconnected") == (
        before + 1
    )
    assert metric(stack, "flm_upstream_errors_total", kind="invalid_response") == 0


def test_a_5xx_that_triggered_a_fallback_is_counted(stack: Stack) -> None:
    before = metric(stack, "flm_upstream_errors_total", engine="flaky", kind="http_5xx")
    reply = stack.client().chat.completions.create(
        model="sturdy", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.model == "sturdy"
    assert metric(stack, "flm_upstream_errors_total", engine="flaky", kind="http_5xx") == (
        before + 1
    )
