"""Failover with two REAL llama.cpp `llama-server`s killed at random moments under load.

Eight official-SDK clients (half streaming) send requests for 15 s to a route whose two
replicas are SIGKILLed and restarted at random moments, one at a time. Must hold: no
request fails, and a stream the kill cut after its first byte (which nothing may retry)
ends with the `stream_interrupted` error event. With only one engine, a dead engine is a
clear 502 within the connect timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from tests.support.gateway_process import run_gateway
from tests.support.llama_fixtures import MakeLlamaServer
from tests.support.llama_server import LlamaServer

CONFIG = """\
version: 1
server: {state_dir: "{state_dir}"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}"}
engines:
  - {name: one, kind: llamacpp, url: "ONE_URL", timeouts: {connect: 2s}}
  - {name: two, kind: llamacpp, url: "TWO_URL", timeouts: {connect: 2s}}
routes:
  - {model: pair, engine: [one, two], upstream_model: tiny, defaults: {max_tokens: 12}}
  - {model: single, engine: one, upstream_model: tiny, defaults: {max_tokens: 12}}
"""

CLIENTS = 8
DURATION = 15.0
MESSAGES = [{"role": "user", "content": "hi"}]


@dataclass
class Tally:
    sent: int = 0
    completed: int = 0
    failed: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)


async def client_loop(client: openai.AsyncOpenAI, stream: bool, stop: float, tally: Tally) -> None:
    while time.monotonic() < stop:
        tally.sent += 1
        received = False
        try:
            if stream:
                chunks = await client.chat.completions.create(
                    model="pair", messages=MESSAGES, stream=True
                )
                async for _ in chunks:
                    received = True
            else:
                reply = await client.chat.completions.create(model="pair", messages=MESSAGES)
                assert reply.choices
            tally.completed += 1
        except openai.APIError as error:
            (tally.cut if received else tally.failed).append(f"{type(error).__name__}: {error}")


@contextmanager
def gateway_client(servers: list[LlamaServer], tmp_path: Path) -> Iterator[openai.AsyncOpenAI]:
    """A gateway in front of the two servers (engines `one` and `two`), and its SDK client."""
    config = CONFIG.replace("ONE_URL", servers[0].url).replace("TWO_URL", servers[1].url)
    with run_gateway(config, tmp_path) as gateway:
        yield openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30
        )


async def test_random_kills_under_load_lose_no_request(
    make_llama_server: MakeLlamaServer, tmp_path: Path
) -> None:
    servers = [make_llama_server(), make_llama_server()]
    with gateway_client(servers, tmp_path) as client:
        await client.chat.completions.create(model="pair", messages=MESSAGES)  # both checked
        tally = Tally()
        stop = time.monotonic() + DURATION
        kills = 0
        chooser = random.Random()

        async def killer() -> None:
            nonlocal kills
            while time.monotonic() < stop - 1.5:
                await asyncio.sleep(chooser.uniform(0.3, 1.5))
                victim = chooser.choice(servers)
                assert victim.process is not None
                victim.process.kill()  # SIGKILL: no goodbye to open connections
                kills += 1
                await asyncio.sleep(chooser.uniform(0.2, 1.0))
                await asyncio.to_thread(victim.start)

        await asyncio.gather(
            killer(), *(client_loop(client, i % 2 == 0, stop, tally) for i in range(CLIENTS))
        )
        print(
            f"\nkill test: {kills} kills, {tally.sent} sent, {tally.completed} complete, "
            f"{len(tally.failed)} failed, {len(tally.cut)} cut after the first byte"
        )
        assert kills >= 5 and tally.sent > 100
        assert tally.failed == []
        assert all("closed the stream before it was complete" in cut for cut in tally.cut)
        assert tally.completed + len(tally.cut) == tally.sent


async def test_no_replica_left_is_a_clear_502_within_the_connect_timeout(
    make_llama_server: MakeLlamaServer, tmp_path: Path
) -> None:
    servers = [make_llama_server(), make_llama_server()]
    with gateway_client(servers, tmp_path) as client:
        await client.chat.completions.create(model="single", messages=MESSAGES)
        assert servers[0].process is not None
        servers[0].process.kill()
        servers[0].process.wait(5)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="single", messages=MESSAGES)
        assert caught.value.status_code == 502 and time.monotonic() - started < 2.5
        body = caught.value.body
        assert isinstance(body, dict) and body["code"] == "engine_unavailable"
        assert "engine 'one'" in body["message"]
