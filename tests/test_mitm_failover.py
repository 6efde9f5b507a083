"""`mitm_failover`: the mitmproxy internals it relies on, and the failures only a raw
engine can produce (a 5xx body too large to hold, one that stalls, one cut short, a
stream that dies between its head and its first event).

The raw engine is a small asyncio server that speaks HTTP/1.1 like an OpenAI-compatible
engine for its health check and model list, and misbehaves on chat completions as told.
The fallback is a fake vLLM engine. The gateway is a real process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import openai
import pytest
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.proxy.layers.http._events import ErrorCode

from flm_gateway.proxy.mitm_failover import HOLD_LIMIT, FailoverHttpStream
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import run_gateway

MESSAGES = [{"role": "user", "content": "hi"}]
MODELS = json.dumps({"object": "list", "data": [{"id": "tiny", "object": "model"}]}).encode()

Misbehave = Callable[[asyncio.StreamWriter], Awaitable[None]]


def test_the_mitmproxy_internals_used_are_there() -> None:
    """An upgrade that renames or removes one of these must fail here, not in production."""
    stream = FailoverHttpStream.__bases__[0]  # mitmproxy's own (install() replaces the name)
    assert stream.__module__ == "mitmproxy.proxy.layers.http"
    for name in (
        "state_wait_for_response_headers",
        "state_stream_response_body",
        "state_consume_response_body",
        "handle_protocol_error",
        "make_server_connection",
        "start_response_stream",
        "send_response",
        "check_killed",
        "check_body_size",
        "check_invalid",
    ):
        assert callable(getattr(stream, name)), name
    assert "stream_id" in _http1.Http1Connection.__annotations__ or hasattr(
        _http1.Http1Connection, "stream_id"
    )
    assert ErrorCode.CONNECT_FAILED and ErrorCode.GENERIC_SERVER_ERROR
    layer = http_layers.HttpLayer.__init__.__code__.co_names
    assert "connections" in layer and "command_sources" in layer


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def big_5xx(writer: asyncio.StreamWriter) -> None:
    body = b"x" * (HOLD_LIMIT + 1000)
    writer.write(head(503, {"content-type": "text/plain", "content-length": str(len(body))}))
    writer.write(body)


async def stalled_5xx(writer: asyncio.StreamWriter) -> None:
    writer.write(head(503, {"content-type": "application/json", "content-length": "100"}))
    writer.write(b'{"error": ')
    await asyncio.sleep(30)


async def cut_5xx(writer: asyncio.StreamWriter) -> None:
    writer.write(head(500, {"content-type": "application/json", "content-length": "100"}))
    writer.write(b'{"error": ')
    await writer.drain()
    writer.close()


async def not_http(writer: asyncio.StreamWriter) -> None:
    """A head that is not HTTP: mitmproxy reports it, then once more when it closes."""
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\nnot http at all\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)


async def stream_head_then_gone(writer: asyncio.StreamWriter) -> None:
    writer.write(head(200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()


class RawEngine:
    """An OpenAI-compatible engine whose chat completions misbehave as `behaviour` says."""

    def __init__(self) -> None:
        self.behaviour: Misbehave = big_5xx
        self.chats = 0
        self.paths: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in request_head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                request_line = request_head.split(b"\r\n", 1)[0]
                if b"/chat/completions" in request_line:
                    self.chats += 1
                    self.paths.append(request_line.split(b" ")[1].decode())
                    await self.behaviour(writer)
                    await writer.drain()
                    writer.close()
                    return
                writer.write(
                    head(
                        200,
                        {"content-type": "application/json", "content-length": str(len(MODELS))},
                    )
                    + MODELS
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def engines() -> AsyncIterator[tuple[RawEngine, FakeEngine]]:
    raw = RawEngine()
    raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    async with FakeEngine("vllm", ["tiny"]) as fallback:
        yield raw, fallback
    raw.server.close()


CONFIG = """\
version: 1
server: {state_dir: "{state_dir}"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}"}
engines:
  - {name: raw, kind: openai, url: RAW_URL, timeouts: {response: 1s}}
  - {name: spare, kind: vllm, url: SPARE_URL}
routes:
  - {model: m, engine: raw, upstream_model: tiny, fallback: [{engine: spare, upstream_model: tiny}]}
"""


async def ask(
    engines: tuple[RawEngine, FakeEngine], tmp_path: Path, behaviour: Misbehave, stream: bool
) -> tuple[object, int]:
    """The client's result (chunks, a reply or the status error) and the fallback's chats;
    each answer must come within 5 s (the raw engine's stalls last 30 s)."""
    raw, spare = engines
    raw.behaviour = behaviour
    config = CONFIG.replace("RAW_URL", raw.url).replace("SPARE_URL", spare.url)
    with run_gateway(config, tmp_path) as gateway:
        client = openai.AsyncOpenAI(
            base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=5
        )
        try:
            if stream:
                chunks = await client.chat.completions.create(
                    model="m", messages=MESSAGES, stream=True
                )
                result: object = [c async for c in chunks]
            else:
                result = await client.chat.completions.create(model="m", messages=MESSAGES)
        except openai.APIStatusError as error:
            result = error
    return result, sum(1 for r in spare.requests if r.path == "/v1/chat/completions")


async def test_a_5xx_too_large_to_hold_is_the_answer(
    engines: tuple[RawEngine, FakeEngine], tmp_path: Path
) -> None:
    result, spare_chats = await ask(engines, tmp_path, big_5xx, stream=False)
    assert isinstance(result, openai.APIStatusError) and result.status_code == 503
    assert spare_chats == 0 and engines[0].chats == 1
    error = result.response.json()["error"]  # the engine's own answer, in OpenAI's shape
    assert error["code"] == "upstream_503" and error["message"].startswith("xxxx")


async def test_a_retry_from_an_engine_behind_a_path_uses_the_fallbacks_own_path(
    engines: tuple[RawEngine, FakeEngine], tmp_path: Path
) -> None:
    raw, spare = engines
    raw.behaviour = cut_5xx
    config = (
        CONFIG.replace("RAW_URL", raw.url + "/pfx")
        .replace("SPARE_URL", spare.url)
        .replace("upstream_model: tiny, fallback", "upstream_model: raw-name, fallback")
    )
    with run_gateway(config, tmp_path) as gateway:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        reply = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices and raw.paths == ["/pfx/v1/chat/completions"]
    sent = [r for r in spare.requests if r.path == "/v1/chat/completions"]
    assert len(sent) == 1 and sent[0].json["model"] == "tiny"


async def test_an_engine_dying_after_its_head_counts_as_failing(
    engines: tuple[RawEngine, FakeEngine], tmp_path: Path
) -> None:
    """Its held head is no success: after `max_fails` (2) such requests it rests, and the
    rescued streams are timed (time to first token) from the fallback's answer."""
    raw, spare = engines
    raw.behaviour = stream_head_then_gone
    config = (
        CONFIG.replace("RAW_URL", raw.url)
        .replace("SPARE_URL", spare.url)
        .replace("timeouts: {response: 1s}", "timeouts: {response: 1s}, health: {max_fails: 2}")
    )
    with run_gateway(config, tmp_path) as gateway:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        for _ in range(4):
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            assert [chunk async for chunk in stream]
    assert raw.chats == 2
    assert sum(1 for r in spare.requests if r.path == "/v1/chat/completions") == 4


@pytest.mark.parametrize(
    "behaviour",
    [stalled_5xx, cut_5xx, stream_head_then_gone, not_http],
    ids=lambda b: b.__name__,
)
async def test_a_failure_before_the_first_byte_goes_to_the_fallback(
    engines: tuple[RawEngine, FakeEngine], tmp_path: Path, behaviour: Misbehave
) -> None:
    result, spare_chats = await ask(engines, tmp_path, behaviour, stream=True)
    assert isinstance(result, list) and result and spare_chats == 1
    assert engines[0].chats == 1
