"""The real llama-server helper: start-up, the endpoints we rely on, the official SDK, restart."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import llama_server as llama_server_module
from tests.support.llama_fixtures import MakeLlamaServer
from tests.support.llama_server import LlamaServer, LlamaServerError, find_llama_server
from tests.support.tiny_model import EMBEDDING_LENGTH


def _client(server: LlamaServer, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, timeout=10)


def test_health_props_and_models(llama_server: LlamaServer) -> None:
    assert llama_server.url == f"http://127.0.0.1:{llama_server.port}"
    assert llama_server.process is not None and llama_server.process.poll() is None

    health = httpx.get(f"{llama_server.url}/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})

    props = httpx.get(f"{llama_server.url}/props").json()
    assert props["total_slots"] == 4
    assert props["model_alias"] == "tiny"
    assert "<|im_start|>" in props["chat_template"]

    models = _client(llama_server).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert models.data[0].owned_by == "llamacpp"


def test_chat_completion(llama_server: LlamaServer) -> None:
    reply = _client(llama_server).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    # The tiny model never emits EOS: generation always runs to max_tokens.
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8


def test_chat_completion_stream(llama_server: LlamaServer) -> None:
    stream = _client(llama_server).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text
    assert finish[-1] == "length" and set(finish[:-1]) == {None}
    # The usage chunk comes last and has no choices.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_embeddings(llama_server: LlamaServer) -> None:
    result = _client(llama_server).embeddings.create(model="tiny", input=["hello", "world"])
    assert [d.index for d in result.data] == [0, 1]
    assert {len(d.embedding) for d in result.data} == {EMBEDDING_LENGTH}
    assert result.data[0].embedding != result.data[1].embedding


def test_stop_then_start_on_the_same_port(llama_server: LlamaServer) -> None:
    port = llama_server.port
    assert llama_server.stop() is not None
    assert llama_server.process is None and not llama_server.is_running()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{llama_server.url}/health")
    assert llama_server.stop() is None  # idempotent

    llama_server.start()
    assert llama_server.port == port
    assert httpx.get(f"{llama_server.url}/health").status_code == 200


def test_api_key(make_llama_server: MakeLlamaServer) -> None:
    server = make_llama_server(api_key="sk-test-123")
    assert httpx.get(f"{server.url}/health").status_code == 200  # no key needed
    denied = httpx.get(f"{server.base_url}/models")
    assert denied.status_code == 401
    assert denied.json()["error"]["type"] == "authentication_error"
    assert _client(server, "sk-test-123").models.list().data[0].id == "tiny"
    with pytest.raises(openai.AuthenticationError):
        _client(server, "sk-wrong").models.list()


def test_port_in_use_is_reported(
    make_llama_server: MakeLlamaServer,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound is enough; listening would stall /health polls
        port = taken.getsockname()[1]
        with pytest.raises(LlamaServerError, match="couldn't bind"):
            make_llama_server(port)


def test_bad_model_fails_fast_with_the_log(llama_server_binary: Path, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"nope")
    server = LlamaServer(llama_server_binary, bad, log_dir=tmp_path, startup_timeout=10)
    with pytest.raises(LlamaServerError, match="exited with"):
        server.start()
    assert server.process is None


def test_flm_llama_server_override(
    llama_server_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLM_LLAMA_SERVER", str(llama_server_binary))
    assert find_llama_server(build=False) == llama_server_binary
    monkeypatch.setenv("FLM_LLAMA_SERVER", "/nonexistent/llama-server")
    with pytest.raises(LlamaServerError):
        find_llama_server(build=False)


def test_auto_port_retries_when_the_port_is_taken(
    llama_server_binary: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken, socket.socket() as free:
        taken.bind(("127.0.0.1", 0))
        free.bind(("127.0.0.1", 0))
        ports = iter([taken.getsockname()[1], free.getsockname()[1]])
        free_port = free.getsockname()[1]
        free.close()
        monkeypatch.setattr(llama_server_module, "_free_port", lambda: next(ports))
        with LlamaServer(llama_server_binary, tiny_model, log_dir=tmp_path) as server:
            assert server.port == free_port
            assert httpx.get(f"{server.url}/health").status_code == 200
