"""The core gateway end to end: real `flm-gateway` process, fake engines speaking their
real protocols, the official `openai` SDK (sync, async, streaming) and curl as clients.

The config is the issue's reference config, with the engines on free ports.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.support.fake_engines import FakeEngine
from tests.support.fakes.state import RecordedRequest
from tests.support.gateway_process import GatewayProcess, free_port, run_gateway

CONFIG = """\
version: 1
server: {state_dir: "{state_dir}", body_size_limit: 256KiB, drain_timeout: 10s}
listeners:
  - name: main
    bind: 127.0.0.1:{port}
    tls: {mode: local-http}
  - name: dropin
    bind: 127.0.0.1:DROPIN_PORT
    passthrough: ollama
engines:
  - name: alpha
    kind: vllm
    url: ALPHA_URL
  - name: beta
    kind: openai
    url: BETA_URL
    api_key: ${BETA_KEY}
  - name: slow
    kind: openai
    url: SLOW_URL
    timeouts: {response: 1s}
  - name: ollama
    kind: ollama
    url: OLLAMA_URL
routes:
  - model: "tiny-*"
    engine: alpha
  - model: chat
    engine: beta
    upstream_model: small-7b
    fallback: [alpha]
    defaults: {temperature: 0.2}
    system_prompt: "You are terse."
  - model: sleepy
    engine: slow
"""


@dataclass
class Stack:
    gateway: GatewayProcess
    alpha: FakeEngine
    beta: FakeEngine
    slow: FakeEngine
    ollama: FakeEngine
    dropin_url: str

    def client(self, **kwargs: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.gateway.url + "/v1", api_key="client-secret", max_retries=0, **kwargs
        )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with (
        FakeEngine("vllm", ["tiny-a"]) as alpha,
        FakeEngine("openai", ["small-7b"], api_key="sk-beta") as beta,
        FakeEngine("openai", ["sleepy"]) as slow,
        FakeEngine("ollama", ["llama3:8b"]) as ollama,
    ):
        dropin_port = free_port()
        config = (
            CONFIG.replace("ALPHA_URL", alpha.url)
            .replace("BETA_URL", beta.url)
            .replace("SLOW_URL", slow.url)
            .replace("OLLAMA_URL", ollama.url)
            .replace("DROPIN_PORT", str(dropin_port))
        )
        with run_gateway(config, tmp_path, env={"BETA_KEY": "sk-beta"}) as gateway:
            yield Stack(gateway, alpha, beta, slow, ollama, f"http://127.0.0.1:{dropin_port}")


async def curl(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "curl", "-s", "-w", "\n%{http_code}", *args, stdout=subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    body, _, status = out.decode().rpartition("\n")
    return int(status), body


async def test_sync_sdk_models_and_chat(stack: Stack) -> None:
    def use_sync_client() -> tuple[dict[str, str], str]:
        client = openai.OpenAI(base_url=stack.gateway.url + "/v1", api_key="k", max_retries=0)
        owners = {model.id: model.owned_by for model in client.models.list()}
        reply = client.chat.completions.create(
            model="tiny-a", messages=[{"role": "user", "content": "hello"}]
        )
        return owners, reply.choices[0].message.content or ""

    owners, content = await asyncio.to_thread(use_sync_client)
    assert owners == {
        "tiny-a": "alpha",
        "small-7b": "beta",
        "sleepy": "slow",
        "llama3:8b": "ollama",
        "chat": "beta",
    }
    assert content


async def test_async_stream_arrives_paced_not_buffered(stack: Stack) -> None:
    client = stack.client()
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="tiny-a",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        extra_headers={"x-fake-chunks": "6", "x-fake-chunk-delay": "0.2"},
    )
    arrivals = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 6
    assert arrivals[0] < 0.6, arrivals  # the first token is not held back until the end
    assert arrivals[-1] - arrivals[0] > 0.8, arrivals  # ...and later ones keep their pacing


async def test_alias_route_rewrites_model_profile_and_credentials(stack: Stack) -> None:
    client = stack.client()
    reply = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    sent = stack.beta.requests[-1]
    assert sent.json["model"] == "small-7b"
    assert sent.json["temperature"] == 0.2
    assert sent.json["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent.headers.get("Authorization") == "Bearer sk-beta"
    assert "client-secret" not in json.dumps(dict(sent.headers))


async def test_fallback_when_engine_down_then_back(stack: Stack) -> None:
    client = stack.client()
    await stack.beta.stop()
    reply = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content
    assert stack.alpha.requests[-1].json["model"] == "tiny-a"  # alpha's own model
    await stack.beta.start()
    await asyncio.sleep(1.1)  # past the probe freshness window
    # A request that falls back nudges beta's health check; once it is back, beta serves
    # again. The check ends in its own time: ask until it has (bounded).
    deadline = time.monotonic() + 10
    chats: list[RecordedRequest] = []
    while not chats:
        assert time.monotonic() < deadline, "beta never came back into rotation"
        reply = await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
        assert reply.choices[0].message.content
        chats = [r for r in stack.beta.requests if r.path == "/v1/chat/completions"]
    assert chats[-1].json["model"] == "small-7b"  # a chat, not a health check


async def test_fallback_on_5xx_before_any_byte(stack: Stack) -> None:
    client = stack.client()
    stack.beta.set_fault(status=503)

    def chats() -> int:
        return sum(1 for r in stack.alpha.requests if r.path == "/v1/chat/completions")

    alpha_before = chats()
    reply = await client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content
    assert chats() == alpha_before + 1


async def test_all_engines_down_is_502_in_openai_shape(stack: Stack) -> None:
    await stack.beta.stop()
    await stack.alpha.stop()
    with pytest.raises(openai.APIStatusError) as caught:
        await stack.client().chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "engine_unavailable"
    assert "'beta'" in body["message"] and "sk-beta" not in body["message"]
    assert str(stack.beta.port) not in body["message"]


async def test_engine_that_never_answers_is_504(stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await stack.client().chat.completions.create(
            model="sleepy",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-headers-delay": "5"},
        )
    assert caught.value.status_code == 504
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "engine_timeout"


async def test_unknown_model_and_path(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await stack.client().chat.completions.create(model="gpt-17", messages=[])
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "model_not_found"
    status, body = await curl(stack.gateway.url + "/v2/whatever")
    assert status == 404 and json.loads(body)["error"]["code"] == "unknown_url"


async def test_completions_and_embeddings(stack: Stack) -> None:
    client = stack.client()
    completion = await client.completions.create(model="tiny-a", prompt="Once")
    assert completion.choices[0].text
    embedding = await client.embeddings.create(model="tiny-a", input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding


async def test_transcription_upload_arrives_whole(stack: Stack, tmp_path: Path) -> None:
    audio = tmp_path / "clip.wav"
    audio.write_bytes(b"RIFF" + bytes(range(256)) * 512)
    with audio.open("rb") as handle:
        result = await stack.client().audio.transcriptions.create(model="tiny-a", file=handle)
    assert str(audio.stat().st_size) in result.text
    assert stack.alpha.requests[-1].path == "/v1/audio/transcriptions"


async def test_image_content_passes_untouched(stack: Stack) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}]
    await stack.client().chat.completions.create(model="tiny-a", messages=messages)  # type: ignore[arg-type]
    assert stack.alpha.requests[-1].json["messages"] == messages


async def test_bad_json_and_oversized_body(stack: Stack, tmp_path: Path) -> None:
    url = stack.gateway.url + "/v1/chat/completions"
    status, body = await curl("-H", "content-type: application/json", "-d", "{nope", url)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_json"
    big = tmp_path / "big.json"
    big.write_text(
        json.dumps({"model": "tiny-a", "messages": [{"role": "user", "content": "x" * 300_000}]})
    )
    status, body = await curl(
        "-H", "content-type: application/json", "--data-binary", f"@{big}", url
    )
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"


async def test_curl_stream_ends_with_done(stack: Stack) -> None:
    status, body = await curl(
        "-N",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps(
            {"model": "tiny-a", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        ),
        stack.gateway.url + "/v1/chat/completions",
    )
    assert status == 200
    assert body.rstrip().endswith("data: [DONE]")
    assert body.count("data: ") >= 3


async def test_health_endpoints_never_touch_engines(stack: Stack) -> None:
    for _ in range(100):  # on a loaded machine the first health checks may still run
        if (await curl(stack.gateway.url + "/readyz"))[0] == 200:
            break
        await asyncio.sleep(0.05)
    before = [engine.connections for engine in (stack.alpha, stack.beta)]
    status, body = await curl(stack.gateway.url + "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    assert (await curl(stack.gateway.url + "/healthz"))[0] == 200
    assert [engine.connections for engine in (stack.alpha, stack.beta)] == before


async def test_passthrough_listener_fronts_ollama_and_blocks_admin(stack: Stack) -> None:
    status, body = await curl(stack.dropin_url + "/api/tags")
    assert status == 200 and json.loads(body)["models"][0]["name"] == "llama3:8b"
    json_type = ("-H", "content-type: application/json")
    status, body = await curl(
        "-X", "POST", *json_type, "-d", '{"model":"llama3:8b"}', stack.dropin_url + "/api/pull"
    )
    assert status == 403 and json.loads(body)["error"]["code"] == "admin_endpoint_disabled"
    status, body = await curl(
        "-X", "DELETE", *json_type, "-d", '{"model":"llama3:8b"}', stack.dropin_url + "//API/delete"
    )
    assert status == 403
    # Without the JSON type, curl -d sends a form's type: refused before anything reads it.
    status, body = await curl("-d", '{"model":"llama3:8b"}', stack.dropin_url + "/api/generate")
    assert status == 415 and json.loads(body)["error"]["code"] == "unsupported_media_type"
    assert stack.ollama.admin_calls == []


async def test_sigterm_lets_a_running_stream_finish(stack: Stack) -> None:
    client = stack.client()
    stream = await client.chat.completions.create(
        model="tiny-a",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        extra_headers={"x-fake-chunks": "8", "x-fake-chunk-delay": "0.15"},
    )
    chunks = 0
    async for chunk in stream:
        if chunks == 1:
            stack.gateway.signal(15)
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
    assert chunks == 8
    assert await asyncio.to_thread(stack.gateway.process.wait, 15) == 0
    assert "draining 1 in-flight request" in stack.gateway.log
