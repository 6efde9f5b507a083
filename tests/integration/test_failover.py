"""Failover end to end: a real gateway process, fake engines speaking vLLM's and OpenAI's
protocol with injected faults, the official `openai` SDK and curl as clients.

Each test names the issue's "must hold" it checks: retry before the first byte (connect,
dead connection, 5xx, timeout) with the stream kept a stream, per-route `retries:`,
balancing, passive health, no retry after the first byte (a clear SSE error event), and
retries/failovers counted in the metrics.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.integration.ops_helpers import http_get, metric_sum
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import GatewayProcess, free_port, run_gateway

CONFIG = """\
version: 1
server: {state_dir: "{state_dir}"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", tls: {mode: local-http}}
admin: {bind: "127.0.0.1:ADMIN_PORT"}
engines:
  - {name: a, kind: vllm, url: A_URL}
  - name: b
    kind: vllm
    url: B_URL
    timeouts: {response: 1s}
    health: {max_fails: 2, fail_timeout: 3s, interval: 30s}
  - {name: c, kind: openai, url: C_URL}
routes:
  - model: fb
    engine: b
    upstream_model: tiny
    fallback: [{engine: a, upstream_model: tiny}]
    retries: {when: [connect, disconnected, 5xx, timeout]}
  - {model: rr, engine: [b, c], upstream_model: tiny}
  - model: weighted
    engine: [{engine: a, weight: 3}, {engine: c, weight: 1}]
    balance: weighted
    upstream_model: tiny
  - model: strict
    engine: b
    upstream_model: tiny
    fallback: [{engine: a, upstream_model: tiny}]
    retries: {when: [connect]}
  - model: mixed
    engine: b
    upstream_model: b-only-name
    fallback: [{engine: c, upstream_model: tiny}]
  - model: solo
    engine: b
    upstream_model: tiny
    retries: {attempts: 3, backoff: 100ms}
"""

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass
class Stack:
    gateway: GatewayProcess
    a: FakeEngine
    b: FakeEngine
    c: FakeEngine
    admin: int

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20
        )

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(self.admin, name, **labels)


def chats(engine: FakeEngine) -> int:
    return sum(1 for r in engine.requests if r.path == CHAT)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with (
        FakeEngine("vllm", ["tiny"]) as a,
        FakeEngine("vllm", ["tiny"]) as b,
        FakeEngine("openai", ["tiny"]) as c,
    ):
        admin = free_port()
        config = (
            CONFIG.replace("A_URL", a.url)
            .replace("B_URL", b.url)
            .replace("C_URL", c.url)
            .replace("ADMIN_PORT", str(admin))
        )
        with run_gateway(config, tmp_path) as gateway:
            yield Stack(gateway, a, b, c, admin)


async def stream_text(client: openai.AsyncOpenAI, model: str) -> tuple[str, int]:
    """The streamed answer's text and how many content chunks carried it."""
    stream = await client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts), sum(1 for part in parts if part)


async def test_issue_repro_first_request_after_engine_dies_gets_the_fallback(
    stack: Stack,
) -> None:
    """The issue's repro: two answers from B, kill B, the very next request (inside the
    probe's freshness window, on a kept-alive connection) is answered by the fallback."""
    client = stack.client()
    for _ in range(2):
        reply = await client.chat.completions.create(model="fb", messages=MESSAGES)
        assert reply.choices[0].message.content
    assert chats(stack.b) == 2
    await stack.b.stop()
    reply = await client.chat.completions.create(model="fb", messages=MESSAGES)
    assert reply.choices[0].message.content and chats(stack.a) == 1
    text, pieces = await stream_text(client, "fb")
    assert text and pieces > 1 and chats(stack.a) == 2


async def test_replica_down_loses_no_request(stack: Stack) -> None:
    """Round robin over b and c with c dead: every request is answered (was 1 in 6 lost)."""
    client = stack.client()
    await stack.c.stop()
    for _ in range(12):
        reply = await client.chat.completions.create(model="rr", messages=MESSAGES)
        assert reply.choices[0].message.content
    assert chats(stack.b) == 12


async def test_5xx_is_retried_and_the_retry_streams(stack: Stack) -> None:
    """A 503 before any byte goes to the fallback; the answer still arrives as a stream of
    chunks, and the fallback (vLLM) was asked for stream usage like a first choice."""
    stack.b.set_fault(status=503, paths=(CHAT,))
    text, pieces = await stream_text(stack.client(), "fb")
    assert text and pieces > 1
    assert chats(stack.b) == 1 and chats(stack.a) == 1
    sent = next(r for r in stack.a.requests if r.path == CHAT).json
    assert sent["stream_options"] == {"include_usage": True}
    assert stack.metric("flm_retries_total", engine="b", reason="5xx") == 1
    assert stack.metric("flm_failovers_total", engine="b", reason="5xx") == 1
    assert stack.metric("flm_upstream_errors_total", engine="b", kind="http_5xx") == 1


async def test_a_retry_is_rewritten_from_the_clients_request(stack: Stack) -> None:
    """The fallback gets the client's request rewritten for it alone: its own model name,
    and no `stream_options` the first engine (vLLM) was asked for but it (openai) is not."""
    stack.b.set_fault(status=503, paths=(CHAT,))
    stream = await stack.client().chat.completions.create(
        model="mixed", messages=MESSAGES, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and all(chunk.choices for chunk in chunks)  # no usage-only chunk
    first = next(r for r in stack.b.requests if r.path == CHAT).json
    assert first["model"] == "b-only-name" and first["stream_options"] == {"include_usage": True}
    retried = next(r for r in stack.c.requests if r.path == CHAT).json
    assert retried["model"] == "tiny" and "stream_options" not in retried


async def test_connection_closed_before_the_head_is_retried(stack: Stack) -> None:
    stack.b.set_fault(close_after=0, paths=(CHAT,))
    reply = await stack.client().chat.completions.create(model="fb", messages=MESSAGES)
    assert reply.choices[0].message.content and chats(stack.a) == 1
    assert stack.metric("flm_failovers_total", engine="b", reason="disconnected") == 1


async def test_timeout_before_the_head_is_retried(stack: Stack) -> None:
    """b's `timeouts.response` is 1 s; it would answer after 3 s: a's answer is used."""
    stack.b.set_fault(headers_delay=3.0, paths=(CHAT,))
    started = time.monotonic()
    text, _ = await stream_text(stack.client(), "fb")
    assert text and chats(stack.a) == 1
    assert time.monotonic() - started < 2.8
    assert stack.metric("flm_failovers_total", engine="b", reason="timeout") == 1
    # One slow request is one failure (max_fails 2), not an engine marked down.
    assert stack.metric("flm_engine_up", engine="b") == 1


async def test_when_without_5xx_passes_the_5xx_through(stack: Stack) -> None:
    stack.b.set_fault(status=503, paths=(CHAT,))
    with pytest.raises(openai.InternalServerError) as caught:
        await stack.client().chat.completions.create(model="strict", messages=MESSAGES)
    assert caught.value.status_code == 503 and chats(stack.a) == 0


async def test_attempts_and_backoff_on_the_same_engine(stack: Stack) -> None:
    """No fallback, attempts 3, backoff 100 ms: b is asked 3 times, 100 + 200 ms apart."""
    stack.b.set_fault(status=500, paths=(CHAT,), times=2)
    started = time.monotonic()
    reply = await stack.client().chat.completions.create(model="solo", messages=MESSAGES)
    assert reply.choices[0].message.content
    assert chats(stack.b) == 3 and time.monotonic() - started >= 0.3
    assert stack.metric("flm_retries_total", engine="b", reason="5xx") == 2
    assert stack.metric("flm_failovers_total") == 0  # same engine: retries, not failovers


async def test_no_fallback_is_a_clear_502_at_once(stack: Stack) -> None:
    await stack.b.stop()
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        await stack.client().chat.completions.create(model="solo", messages=MESSAGES)
    assert caught.value.status_code == 502 and time.monotonic() - started < 5
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "engine_unavailable"
    assert "'b'" in body["message"] and str(stack.b.port) not in body["message"]


async def test_a_stream_cut_midway_ends_with_an_error_event(stack: Stack) -> None:
    """After the first byte nothing is retried: the SDK raises on the error event."""
    stack.b.set_fault(close_after=3, paths=(CHAT,))
    stream = await stack.client().chat.completions.create(
        model="fb", messages=MESSAGES, stream=True
    )
    received = 0
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received += bool(chunk.choices and chunk.choices[0].delta.content)
    assert received >= 1 and "closed the stream" in str(caught.value)
    assert chats(stack.a) == 0  # never retried once bytes were sent
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sN", "--max-time", "20", stack.gateway.url + CHAT,
        "-H", "content-type: application/json",
        "-d", '{"model": "fb", "stream": true, "messages": [{"role": "user", "content": "x"}]}',
        stdout=subprocess.PIPE,
    )  # fmt: skip
    out, _ = await curl.communicate()
    events = [e for e in out.decode().split("\n\n") if e.strip()]
    assert events[-1].startswith("data: {") and '"stream_interrupted"' in events[-1]
    assert curl.returncode == 18  # curl: transfer closed with outstanding read data


async def test_passive_health_rests_an_engine_then_a_probe_lets_it_back(stack: Stack) -> None:
    """b: max_fails 2, fail_timeout 3 s. Two 5xx in a row take it out: the next requests go
    to a without trying b; after 3 s its health check (the half-open probe) brings it back."""
    client = stack.client()
    stack.b.set_fault(status=500, paths=(CHAT,), times=2)
    for _ in range(2):
        await client.chat.completions.create(model="fb", messages=MESSAGES)
    assert chats(stack.b) == 2 and chats(stack.a) == 2
    for _ in range(3):
        await client.chat.completions.create(model="fb", messages=MESSAGES)
    assert chats(stack.b) == 2 and chats(stack.a) == 5
    # Resting is a routing matter: b still counts as up, so requests that make every
    # engine fail (a poison prompt) cannot make the gateway look down.
    assert stack.metric("flm_engine_up", engine="b") == 1
    status, _ = http_get(stack.gateway.url + "/readyz")
    assert status == 200
    await asyncio.sleep(4.0)
    await client.chat.completions.create(model="fb", messages=MESSAGES)
    assert chats(stack.b) == 3


async def test_weighted_balance_follows_the_weights(stack: Stack) -> None:
    client = stack.client()
    for _ in range(40):
        await client.chat.completions.create(model="weighted", messages=MESSAGES)
    assert (chats(stack.a), chats(stack.c)) == (30, 10)
