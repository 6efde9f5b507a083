"""Engine health in the running gateway: real `flm-gateway` process, fake engines speaking
their real protocols, the official `openai` SDK and curl as clients.

Proves: an engine going down is skipped for its fallback, and used again when it comes back
(no restart); a degraded engine (llama.cpp loading its model) ranks behind a healthy
fallback; /v1/models and /readyz follow; model lists refresh on a timer and on a miss,
never per request; stream usage is asked for, counted and stripped per engine kind.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import GatewayProcess, run_gateway

CONFIG = """\
version: 1
server: {state_dir: "{state_dir}", log_level: debug}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", tls: {mode: local-http}}
engines:
  - name: primary
    kind: llamacpp
    url: PRIMARY_URL
    health: {interval: 1s, timeout: 2s, models_refresh: 60s}
  - name: backup
    kind: vllm
    url: BACKUP_URL
    health: {interval: 1s, timeout: 2s, models_refresh: 1s}
routes:
  - model: assistant
    engine: primary
    upstream_model: tiny
    fallback: [{engine: backup, upstream_model: small}]
"""


@dataclass
class Stack:
    gateway: GatewayProcess
    primary: FakeEngine
    backup: FakeEngine

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gateway.url + "/v1", api_key="k", max_retries=0)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient() as http:
            return await http.get(self.gateway.url + path, timeout=10)

    async def model_ids(self) -> set[str]:
        return {m["id"] for m in (await self.get("/v1/models")).json()["data"]}

    async def ready(self) -> dict[str, Any]:
        response = await self.get("/readyz")
        return {**response.json(), "http": response.status_code}


def chats(engine: FakeEngine) -> list[str]:
    """Models asked of `engine` in chat requests, oldest first."""
    return [r.json["model"] for r in engine.requests if r.path == "/v1/chat/completions"]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> float:
    """Poll `check` until it holds; returns the seconds it took (fails after `timeout`)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with FakeEngine("llamacpp", ["tiny"]) as primary, FakeEngine("vllm", ["small"]) as backup:
        config = CONFIG.replace("PRIMARY_URL", primary.url).replace("BACKUP_URL", backup.url)
        with run_gateway(config, tmp_path) as gateway:
            built = Stack(gateway, primary, backup)

            async def both_up() -> bool:
                return (await built.ready())["engines_up"] == 2

            await eventually(both_up)
            yield built


async def ask(stack: Stack, model: str = "assistant") -> str:
    reply = await stack.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.model


async def test_down_engine_goes_to_fallback_and_is_used_again_when_back(stack: Stack) -> None:
    await ask(stack)
    assert chats(stack.primary) == ["tiny"]

    await stack.primary.stop()
    await asyncio.sleep(1.1)  # past the probe freshness window (upstream.PROBE_FRESHNESS)
    await ask(stack)  # the connect probe fails (or the health check saw it): the fallback answers
    assert chats(stack.backup) == ["small"]

    async def primary_gone() -> bool:
        ready = await stack.ready()
        return ready["engines_up"] == 1 and "tiny" not in await stack.model_ids()

    await eventually(primary_gone)
    assert (await stack.ready())["http"] == 200  # the backup still serves
    await ask(stack)
    assert chats(stack.backup) == ["small", "small"]

    await stack.primary.start()

    async def primary_back() -> bool:
        return "tiny" in await stack.model_ids()

    took = await eventually(primary_back)
    assert took < 2.0  # down engines are checked every interval / 4
    await ask(stack)
    assert chats(stack.primary) == ["tiny", "tiny"]
    assert "engine primary is unreachable" in stack.gateway.log
    assert "engine primary is running-healthy" in stack.gateway.log


async def test_degraded_engine_ranks_behind_a_healthy_fallback(stack: Stack) -> None:
    stack.primary.set_health("loading")  # llama.cpp: 503 "Loading model" on every path

    async def degraded() -> bool:
        return (await stack.ready())["engines_degraded"] == 1

    await eventually(degraded)
    await ask(stack)
    assert chats(stack.primary) == [] and chats(stack.backup) == ["small"]
    assert "engine primary is running-degraded: Loading model" in stack.gateway.log

    stack.primary.set_health("ok")

    async def healthy_again() -> bool:
        return (await stack.ready())["engines_up"] == 2

    await eventually(healthy_again)
    await ask(stack)
    assert chats(stack.primary) == ["tiny"]


async def test_readyz_follows_reachability(stack: Stack) -> None:
    await stack.primary.stop()
    await stack.backup.stop()

    async def not_ready() -> bool:
        return (await stack.ready())["http"] == 503

    await eventually(not_ready)
    assert await stack.model_ids() == set()
    await stack.backup.start()

    async def ready() -> bool:
        return (await stack.ready())["http"] == 200

    await eventually(ready)
    assert await stack.model_ids() == {"small", "assistant"}


async def test_model_lists_refresh_on_timer_and_on_miss_never_per_request(stack: Stack) -> None:
    def model_list_calls(engine: FakeEngine) -> int:
        return sum(1 for r in engine.requests if r.path == "/v1/models")

    # never per request
    before = model_list_calls(stack.primary)
    for _ in range(10):
        await ask(stack, "tiny")
    assert model_list_calls(stack.primary) == before

    # on the timer (backup: models_refresh 1s)
    stack.backup.models.append("fresh")

    async def fresh_listed() -> bool:
        return "fresh" in await stack.model_ids()

    await eventually(fresh_listed)

    # on a miss (primary: models_refresh 60s): an unknown name triggers one refresh
    stack.primary.models.append("surprise")
    before = model_list_calls(stack.primary)
    assert await ask(stack, "surprise")
    assert chats(stack.primary)[-1] == "surprise"
    assert model_list_calls(stack.primary) == before + 1
    with pytest.raises(openai.NotFoundError):  # still unknown: 404, and no refresh storm
        await ask(stack, "nowhere")
    with pytest.raises(openai.NotFoundError):
        await ask(stack, "nowhere")
    assert model_list_calls(stack.primary) <= before + 2


USAGE_LOG = re.compile(
    r"usage request=\S+ engine=(\S+) prompt=(\d+) completion=(\d+) estimated=(True|False)"
)


async def test_stream_usage_through_the_gateway(stack: Stack) -> None:
    client = stack.client()
    stream = await client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and all(chunk.usage is None for chunk in chunks)  # not asked, not sent
    sent = next(r.json for r in reversed(stack.primary.requests) if r.path.endswith("completions"))
    assert sent["stream_options"] == {"include_usage": True}  # ...but asked of the engine

    stream = await client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].choices == []

    process = await asyncio.create_subprocess_exec(
        "curl", "-sN", stack.gateway.url + "/v1/chat/completions",
        "-H", "content-type: application/json",
        "-d", json.dumps({"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]}),  # noqa: E501
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 20)
    assert out.endswith(b"data: [DONE]\n\n")
    assert b'"choices":[]' not in out and b'"choices": []' not in out

    async def logged() -> bool:
        return len(USAGE_LOG.findall(stack.gateway.log)) >= 3

    await eventually(logged)
    engines = {
        (engine, estimated) for engine, _, _, estimated in USAGE_LOG.findall(stack.gateway.log)
    }
    assert engines == {("primary", "False")}
    assert "Traceback" not in stack.gateway.log  # clients closing after [DONE] are quiet
