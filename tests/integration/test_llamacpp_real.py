"""The gateway in front of the REAL llama.cpp `llama-server` (tiny generated model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai

from tests.support.gateway_process import run_gateway
from tests.support.llama_server import LlamaServer

CONFIG = """\
version: 1
server: {state_dir: "{state_dir}"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}"}
engines:
  - {name: cpu-box, kind: llamacpp, url: "LLAMA_URL"}
routes:
  - {model: assistant, engine: cpu-box, upstream_model: tiny, defaults: {max_tokens: 8}}
"""


async def test_chat_stream_and_embeddings_through_the_gateway(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    with run_gateway(CONFIG.replace("LLAMA_URL", llama_server.url), tmp_path) as gateway:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        for _ in range(50):  # the first health check may still be running
            if [m.id async for m in client.models.list()]:
                break
            await asyncio.sleep(0.1)
        ids = [m.id async for m in client.models.list()]
        assert "tiny" in ids and "assistant" in ids

        reply = await client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content is not None
        assert reply.usage is not None and reply.usage.completion_tokens <= 8

        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=8
        )
        chunks = [chunk async for chunk in stream]
        assert len(chunks) >= 2

        embedding = await client.embeddings.create(model="tiny", input="hello")
        assert len(embedding.data[0].embedding) == 64


async def test_the_alias_in_every_chunk_and_llama_errors_in_openai_shape(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    with run_gateway(CONFIG.replace("LLAMA_URL", llama_server.url), tmp_path) as gateway:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        for _ in range(50):  # the first health check may still be running
            if [m.id async for m in client.models.list()]:
                break
            await asyncio.sleep(0.1)
        raw = await client.chat.completions.with_raw_response.create(
            model="assistant", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in raw.parse()]
        assert len(chunks) >= 2 and {chunk.model for chunk in chunks} == {"assistant"}
        assert raw.headers["x-flm-upstream-model"] == "tiny"
        assert "server" not in raw.headers  # llama-server says `Server: llama.cpp`
        reply = await client.embeddings.create(model="assistant", input="hello")
        assert reply.model == "assistant"

        # llama-server's own error: {"error": {"code": 500, "message": ..., "type": ...}}
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        try:
            await client.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": [image]}]
            )
        except openai.APIStatusError as exc:
            error = exc.body
            status = exc.status_code
        else:
            raise AssertionError("llama-server without a projector accepted an image")
        assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
        assert 400 <= status < 600
        assert isinstance(error["message"], str) and "image" in error["message"].lower()
        assert error["code"] == f"upstream_{status}"
