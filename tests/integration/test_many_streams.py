"""512 concurrent SSE streams through one gateway process, none lost, none stalled.

The engine is the fake llama.cpp server (real SSE, aiohttp) telling 512 slots in `/props`
`total_slots`, so the gateway's default concurrency cap is the engine's 512 (no cap is
configured) and every stream gets a slot at once. One client address opens all 512
connections, so `max_connections_per_client` is lifted for it. Each stream must carry all
its content chunks in order and end with `[DONE]`. Not timed: the bound is generous and
only there so that a stall fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from pathlib import Path

import aiohttp

from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import GatewayProcess, run_gateway

STREAMS = 512
CHUNKS = 12
BOUND_S = 180.0


def config(engine_url: str) -> str:
    return f"""\
version: 1
server:
  state_dir: "{{state_dir}}"
  limits: {{max_connections_per_client: 0}}
listeners:
  - {{name: main, bind: "127.0.0.1:{{port}}"}}
engines:
  - {{name: llama, kind: llamacpp, url: "{engine_url}"}}
routes:
  - {{model: chat, engine: llama, upstream_model: tiny}}
"""


def enough_files(needed: int) -> None:
    """This process holds every client connection and the fake engine's side of each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard >= needed, (
        f"the open-file hard limit ({hard}) is below the {needed} this test needs"
    )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def wait_for_log(gateway: GatewayProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in gateway.log:
        assert time.monotonic() < deadline, f"not logged: {text!r}"
        await asyncio.sleep(0.1)


async def one_stream(session: aiohttp.ClientSession, url: str, index: int) -> list[str]:
    """The content pieces of one streamed chat completion, in the order they came."""
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": f"#{index}"}]}
    pieces: list[str] = []
    done = False
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                continue
            event = json.loads(payload)
            assert event["model"] == "chat"  # the client's name, in every event
            for choice in event["choices"]:
                content = choice["delta"].get("content")
                if content:
                    pieces.append(content)
    assert done, f"stream {index} ended without [DONE]"
    return pieces


async def test_512_concurrent_streams_complete_in_order(tmp_path: Path) -> None:
    enough_files(4 * STREAMS + 256)
    engine = FakeEngine("llamacpp", ["tiny"], chunks=CHUNKS, chunk_delay=0.05, slots=STREAMS)
    await engine.start()
    try:
        with run_gateway(config(engine.url), tmp_path) as gateway:
            await wait_for_log(gateway, f"reports a capacity of {STREAMS} requests at once", 30)
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=BOUND_S)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                asyncio.timeout(BOUND_S),
            ):
                results = await asyncio.gather(
                    *(one_stream(session, gateway.url, i) for i in range(STREAMS))
                )
            expected = [f"w{i} " for i in range(CHUNKS)]
            assert [i for i, pieces in enumerate(results) if pieces != expected] == []
    finally:
        await engine.stop()
