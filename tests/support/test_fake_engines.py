"""The fake engines against the shapes real clients expect: the openai SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.fake_engines import KINDS, FakeEngine, Fault, start_fake_engine_process

ALL_KINDS = sorted(KINDS)
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "say something short"}]


def sdk(engine: FakeEngine, key: str = "sk-test") -> openai.AsyncOpenAI:
    # No retries: a test that injects a 5xx wants to see it, once.
    return openai.AsyncOpenAI(base_url=engine.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def sse_events(response: aiohttp.ClientResponse) -> list[str]:
    """The `data:` payloads of an SSE body, in order."""
    return [
        line.decode().removeprefix("data: ").strip()
        async for line in response.content
        if line.startswith(b"data: ")
    ]


# ---- the OpenAI layer, through the official SDK, for every kind ----------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_chat_non_stream(kind: str) -> None:
    async with FakeEngine(kind=kind, chunks=4) as eng, sdk(eng) as client:
        model = eng.models[0]
        answer = await client.chat.completions.create(model=model, messages=CHAT)
        assert answer.object == "chat.completion"
        assert answer.choices[0].message.content == "w0 w1 w2 w3 "
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage is not None
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 4)
        assert answer.usage.total_tokens == 7
        listed = await client.models.list()
        assert [m.id.removesuffix(":latest") for m in listed.data] == [
            m.removesuffix(":latest") for m in eng.models
        ]
        chat = [r for r in eng.requests if r.path == "/v1/chat/completions"]
        assert chat[0].method == "POST" and chat[0].json["model"] == model
        assert chat[0].headers["Authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_chat_stream_and_usage_chunk(kind: str) -> None:
    async with FakeEngine(kind=kind, chunks=5) as eng, sdk(eng) as client:
        stream = await client.chat.completions.create(
            model=eng.models[0],
            messages=CHAT,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=3,
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 "
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == "length" and reasons.count("length") == 1
    if kind == "lmstudio":  # LM Studio ignores include_usage (lmstudio-bug-tracker#713)
        assert all(c.usage is None for c in chunks)
    else:
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


async def test_stream_is_paced_not_buffered() -> None:
    async with FakeEngine(kind="vllm", chunks=6, chunk_delay=0.05) as eng, sdk(eng) as client:
        started = time.monotonic()
        stream = await client.chat.completions.create(
            model=eng.models[0],
            messages=CHAT,
            stream=True,
        )
        arrivals = [time.monotonic() - started async for _ in stream]
    # role chunk, 6 content chunks (the last carries finish_reason): 6 gaps of 50 ms.
    assert len(arrivals) == 7
    assert arrivals[0] < 0.1
    assert arrivals[-1] >= 0.28
    assert arrivals[-1] - arrivals[0] >= 0.25


@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_text_completions(kind: str) -> None:
    async with FakeEngine(kind=kind, chunks=3) as eng, sdk(eng) as client:
        whole = await client.completions.create(model=eng.models[0], prompt="one two")
        assert whole.object == "text_completion"
        assert whole.choices[0].text == "w0 w1 w2 "
        assert whole.usage is not None and whole.usage.prompt_tokens == 2
        stream = await client.completions.create(model=eng.models[0], prompt="one two", stream=True)
        pieces = [c.choices[0].text async for c in stream if c.choices]
        assert "".join(pieces) == "w0 w1 w2 "


async def test_embeddings_are_deterministic_in_both_encodings() -> None:
    async with FakeEngine(kind="vllm") as eng, sdk(eng) as client:
        model = eng.models[0]
        first = await client.embeddings.create(model=model, input=["alpha", "beta"])
        again = await client.embeddings.create(
            model=model, input=["alpha", "beta"], encoding_format="float"
        )
        assert eng.requests[0].json.get("encoding_format") == "base64"  # the SDK's default
        for decoded, plain in zip(first.data, again.data, strict=True):
            assert decoded.embedding == pytest.approx(plain.embedding, abs=1e-6)
        assert first.data[0].embedding != first.data[1].embedding
        assert len(first.data[0].embedding) == 8
        assert first.usage.prompt_tokens == 2


async def test_transcription_upload_arrives_whole() -> None:
    audio = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit
    async with FakeEngine(kind="vllm", models=["whisper-tiny"]) as eng, sdk(eng) as client:
        result = await client.audio.transcriptions.create(
            model="whisper-tiny", file=("clip.wav", audio, "audio/wav")
        )
        assert f"{len(audio)} bytes" in result.text
        assert "clip.wav" in result.text
        record = eng.requests[-1]
        assert record.path == "/v1/audio/transcriptions"
        assert record.json["model"] == "whisper-tiny"
        assert record.json["file"]["size"] == len(audio)
        assert record.body_size == len(audio)


# ---- native APIs -------------------------------------------------------------------


async def test_ollama_native_chat_streams_ndjson(http: aiohttp.ClientSession) -> None:
    async with FakeEngine(kind="ollama", models=["tiny"], chunks=3, chunk_delay=0.01) as eng:
        async with http.get(eng.url + "/") as root:
            assert await root.text() == "Ollama is running"
        body = {"model": "tiny", "messages": CHAT}  # `stream` defaults to true
        async with http.post(eng.url + "/api/chat", json=body) as response:
            assert response.content_type == "application/x-ndjson"
            lines = [json.loads(line) async for line in response.content if line.strip()]
        assert [line["done"] for line in lines] == [False, False, False, True]
        assert "".join(line["message"]["content"] for line in lines) == "w0 w1 w2 "
        final = lines[-1]
        assert final["done_reason"] == "stop"
        assert (final["prompt_eval_count"], final["eval_count"]) == (3, 3)
        gen = {"model": "tiny:latest", "prompt": "hi", "stream": False}
        async with http.post(eng.url + "/api/generate", json=gen) as response:
            single = await response.json()
        assert single["response"] == "w0 w1 w2 " and single["done"] is True
        assert isinstance(single["context"], list)
        async with http.post(eng.url + "/api/chat", json={"model": "absent"}) as response:
            assert response.status == 404
            assert "not found" in (await response.json())["error"]


async def test_ollama_catalogue_and_recorded_admin_calls(http: aiohttp.ClientSession) -> None:
    async with FakeEngine(kind="ollama", models=["tiny"]) as eng:
        async with http.get(eng.url + "/api/tags") as response:
            (model,) = (await response.json())["models"]
        assert model["name"] == model["model"] == "tiny:latest"
        assert set(model) >= {"modified_at", "size", "digest", "details"}
        assert set(model["details"]) >= {"format", "family", "parameter_size", "quantization_level"}
        async with http.post(eng.url + "/api/show", json={"model": "tiny"}) as response:
            assert "model_info" in await response.json()
        async with http.get(eng.url + "/api/ps") as response:
            assert (await response.json())["models"][0]["size_vram"] > 0
        async with http.post(eng.url + "/api/pull", json={"model": "extra:7b"}) as response:
            statuses = [json.loads(line)["status"] async for line in response.content]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        async with http.delete(eng.url + "/api/delete", json={"model": "tiny"}) as response:
            assert response.status == 200
        async with http.post(
            eng.url + "/api/copy", json={"source": "nope", "destination": "x"}
        ) as response:
            assert response.status == 404
        assert eng.models == ["extra:7b"]
        assert [(c.method, c.path) for c in eng.admin_calls] == [
            ("POST", "/api/pull"),
            ("DELETE", "/api/delete"),
            ("POST", "/api/copy"),
        ]


async def test_vllm_health_version_and_model_cards(http: aiohttp.ClientSession) -> None:
    async with FakeEngine(kind="vllm", models=["tiny-a", "tiny-b"]) as eng:
        async with http.get(eng.url + "/health") as response:
            assert response.status == 200 and await response.read() == b""
        async with http.get(eng.url + "/version") as response:
            assert "version" in await response.json()
        async with http.get(eng.url + "/v1/models") as response:
            cards = (await response.json())["data"]
        assert [c["id"] for c in cards] == ["tiny-a", "tiny-b"]
        assert all(c["owned_by"] == "vllm" and c["max_model_len"] > 0 for c in cards)
        assert cards[0]["root"] == "tiny-a"
        eng.set_health("degraded")
        async with http.get(eng.url + "/health") as response:
            assert response.status == 503
        async with http.get(eng.url + "/v1/models") as response:
            assert response.status == 200  # degraded only fails the health probe


async def test_lmstudio_v0_models_and_its_200_for_unknown_paths(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeEngine(kind="lmstudio") as eng:
        async with http.get(eng.url + "/api/v0/models") as response:
            entries = (await response.json())["data"]
        assert [e["state"] for e in entries] == ["loaded", "not-loaded"]
        assert [e["type"] for e in entries] == ["llm", "embeddings"]
        assert all(e["max_context_length"] > 0 and e["arch"] for e in entries)
        async with http.post(
            eng.url + "/v1/embeddings", json={"model": entries[1]["id"], "input": "x"}
        ) as response:
            assert response.status == 200
        async with http.get(eng.url + "/api/v0/models/" + entries[1]["id"]) as response:
            assert (await response.json())["state"] == "loaded"  # loaded just in time
        async with http.post(eng.url + "/chat/completions", json={}) as response:
            assert response.status == 200
            assert "Unexpected endpoint" in (await response.json())["error"]


async def test_llamacpp_loads_then_serves(http: aiohttp.ClientSession) -> None:
    async with FakeEngine(kind="llamacpp", loading_seconds=0.3) as eng:
        async with http.get(eng.url + "/health") as response:
            assert response.status == 503
            assert await response.json() == {
                "error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}
            }
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            async with http.get(eng.url + "/health") as response:
                if response.status == 200:
                    assert await response.json() == {"status": "ok"}
                    break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("llama.cpp fake never finished loading")
        async with http.get(eng.url + "/props") as response:
            props = await response.json()
        assert props["total_slots"] > 0 and props["default_generation_settings"]["n_ctx"] > 0
        async with http.get(eng.url + "/slots") as response:
            assert len(await response.json()) == props["total_slots"]
        async with http.get(eng.url + "/v1/models") as response:
            listing = await response.json()
        assert listing["data"][0]["owned_by"] == "llamacpp"
        assert listing["models"][0]["name"] == listing["data"][0]["id"]


# ---- fault injection and observation ---------------------------------------------


async def test_instance_status_fault_counts_down_and_clears() -> None:
    async with FakeEngine(kind="openai") as eng, sdk(eng) as client:
        eng.set_fault(status=503, times=1, paths=("/v1/chat/",))
        with pytest.raises(openai.InternalServerError) as failure:
            await client.chat.completions.create(model="fake-chat", messages=CHAT)
        assert failure.value.status_code == 503
        await client.models.list()  # another path: not affected, not counted
        answer = await client.chat.completions.create(model="fake-chat", messages=CHAT)
        assert answer.choices[0].message.content
        assert eng.state.fault == Fault()


async def test_per_request_faults_from_headers_and_body(http: aiohttp.ClientSession) -> None:
    async with FakeEngine(kind="vllm") as eng:
        url = eng.url + "/v1/chat/completions"
        started = time.monotonic()
        headers = {"x-fake-status": "502", "x-fake-headers-delay": "0.2"}
        async with http.post(url, json={"messages": CHAT}, headers=headers) as response:
            assert response.status == 502
            assert (await response.json())["error"]["code"] == 502
        assert time.monotonic() - started >= 0.2
        body = {"messages": CHAT, "stream": True, "x_fake": {"chunks": 2, "error_after": 2}}
        async with http.post(url, json=body) as response:
            events = await sse_events(response)
        assert json.loads(events[1])["choices"][0]["delta"]["content"] == "w0 "
        assert "error" in json.loads(events[2])
        assert events[-1] == "[DONE]"  # vLLM ends a failed stream with [DONE]


async def test_connection_closed_mid_stream_and_before_any_byte(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeEngine(kind="llamacpp", chunks=6) as eng:
        url = eng.url + "/v1/chat/completions"
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.post(
                url, json={"messages": CHAT, "stream": True}, headers={"x-fake-close-after": "3"}
            ) as response:
                assert response.status == 200
                await response.read()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with http.post(
                url, json={"messages": CHAT}, headers={"x-fake-close-after": "0"}
            ) as response:
                await response.read()


async def test_close_after_delivers_exactly_the_events_before_it() -> None:
    async with FakeEngine(kind="openai", chunks=6) as eng:
        eng.set_fault(close_after=3)
        reader, writer = await asyncio.open_connection("127.0.0.1", eng.port)
        body = json.dumps({"messages": CHAT, "stream": True}).encode()
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        data = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
        writer.close()
    assert data.count(b"data: {") == 3
    assert b"[DONE]" not in data and not data.endswith(b"0\r\n\r\n")


async def test_stop_refuses_then_start_returns_on_the_same_port(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeEngine(kind="vllm") as eng:
        port = eng.port
        async with http.get(eng.url + "/health") as response:
            assert response.status == 200
        await eng.stop()
        with pytest.raises(aiohttp.ClientConnectorError):
            async with http.get(eng.url + "/health"):
                pass
        await eng.start()
        assert eng.port == port
        async with http.get(eng.url + "/health") as response:
            assert response.status == 200
        assert eng.connections == 2  # one per start: the session reconnected once
        assert eng.in_flight == 0


async def test_upstream_api_key_guards_all_but_health(http: aiohttp.ClientSession) -> None:
    async with FakeEngine(kind="vllm", api_key="upstream-secret") as eng:
        async with http.get(eng.url + "/v1/models") as response:
            assert response.status == 401
        async with http.get(eng.url + "/health") as response:
            assert response.status == 200
        async with sdk(eng, key="upstream-secret") as client:
            assert (await client.models.list()).data


def test_process_mode_prints_ready_and_serves_control_paths() -> None:
    with start_fake_engine_process("vllm", ["tiny-a", "tiny-b"], chunks=4) as (process, url):
        assert process.poll() is None
        assert url.startswith("http://127.0.0.1:")
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        answer = client.chat.completions.create(model="tiny-b", messages=CHAT)
        assert answer.choices[0].message.content == "w0 w1 w2 w3 "
        control = httpx.post(url + "/_fake/fault", json={"status": 503, "times": 1})
        assert control.json()["status"] == 503
        with pytest.raises(openai.InternalServerError):
            client.models.list()
        stats = httpx.get(url + "/_fake/stats").json()
        assert stats["requests"] == 2 and stats["connections"] >= 1
        recorded = httpx.get(url + "/_fake/requests").json()
        assert [r["path"] for r in recorded] == ["/v1/chat/completions", "/v1/models"]
    assert process.poll() is not None
