"""Token accounting per engine kind through the real gateway process (fake engines).

For each kind, a stream the client asked no usage for: the gateway asks the engines that
honour `stream_options.include_usage` (vLLM, llama.cpp, Ollama, LM Studio; not the generic
`openai` kind), strips the extra chunk, and counts from it; LM Studio's fake models a
version that ignores the option (before 0.3.18), so its counts are estimated, as are the
generic engine's. Non-streamed answers carry `usage`. Ollama's native NDJSON on a
passthrough listener is counted from `prompt_eval_count`/`eval_count`.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import GatewayProcess, free_port, run_gateway

KINDS = ["vllm", "llamacpp", "ollama", "lmstudio", "openai"]
ASKED = {"vllm": True, "llamacpp": True, "ollama": True, "lmstudio": True, "openai": False}
REPORTED = {"vllm": True, "llamacpp": True, "ollama": True, "lmstudio": False, "openai": False}
USAGE_LOG = re.compile(
    r"usage request=(\S+) engine=(\S+) prompt=(\d+) completion=(\d+) estimated=(True|False)"
)


def config(engines: dict[str, FakeEngine], dropin: int) -> str:
    lines = [
        "version: 1",
        'server: {state_dir: "{state_dir}", log_level: debug}',
        "listeners:",
        '  - {name: main, bind: "127.0.0.1:{port}"}',
        f'  - {{name: dropin, bind: "127.0.0.1:{dropin}", passthrough: ollama}}',
        "engines:",
    ]
    lines += [f"  - {{name: {k}, kind: {k}, url: {e.url}}}" for k, e in engines.items()]
    lines += ["routes:"]
    lines += [f"  - {{model: m-{k}, engine: {k}, upstream_model: model-{k}}}" for k in engines]
    return "\n".join(lines) + "\n"


def usage_of(log: str, request_id: str) -> tuple[str, int, int, bool]:
    for rid, engine, prompt, completion, estimated in USAGE_LOG.findall(log):
        if rid == request_id:
            return engine, int(prompt), int(completion), estimated == "True"
    raise AssertionError(f"no usage logged for {request_id}")


async def test_usage_per_kind_streamed_and_not(tmp_path: Path) -> None:
    fakes = {kind: FakeEngine(kind, [f"model-{kind}"], chunks=5) for kind in KINDS}
    for fake in fakes.values():
        await fake.start()
    dropin = free_port()
    try:
        with run_gateway(config(fakes, dropin), tmp_path) as gateway:
            client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
            for kind, fake in fakes.items():
                rid = f"stream-{kind}"
                stream = await client.chat.completions.create(
                    model=f"m-{kind}",
                    messages=[{"role": "user", "content": "say something"}],
                    stream=True,
                    extra_headers={"x-request-id": rid},
                )
                chunks = [chunk async for chunk in stream]
                assert chunks and all(c.usage is None for c in chunks), kind
                assert all(c.choices for c in chunks), kind  # no usage-only chunk leaked
                sent = next(
                    r.json for r in reversed(fake.requests) if r.path.endswith("/chat/completions")
                )
                assert ("stream_options" in sent) is ASKED[kind], kind
                await _wait_logged(gateway, rid)
                engine, prompt, completion, estimated = usage_of(gateway.log, rid)
                assert engine == kind and prompt > 0 and completion > 0
                assert estimated is not REPORTED[kind], kind

                rid = f"json-{kind}"
                reply = await client.chat.completions.create(
                    model=f"m-{kind}",
                    messages=[{"role": "user", "content": "say something"}],
                    extra_headers={"x-request-id": rid},
                )
                await _wait_logged(gateway, rid)
                _, prompt, completion, estimated = usage_of(gateway.log, rid)
                assert reply.usage is not None
                assert (prompt, completion, estimated) == (
                    reply.usage.prompt_tokens,
                    reply.usage.completion_tokens,
                    False,
                ), kind

            # Ollama's native API on the passthrough listener
            async with (
                httpx.AsyncClient(timeout=10) as http,
                http.stream(
                    "POST",
                    f"http://127.0.0.1:{dropin}/api/chat",
                    json={"model": "model-ollama", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"x-request-id": "native"},
                ) as response,
            ):
                lines = [line async for line in response.aiter_lines() if line]
            assert response.headers["content-type"].startswith("application/x-ndjson")
            await _wait_logged(gateway, "native")
            engine, prompt, completion, estimated = usage_of(gateway.log, "native")
            assert (engine, estimated) == ("ollama", False)
            assert f'"eval_count":{completion}' in lines[-1].replace(" ", "")
            assert f'"prompt_eval_count":{prompt}' in lines[-1].replace(" ", "")
    finally:
        for fake in fakes.values():
            await fake.stop()


async def _wait_logged(gateway: GatewayProcess, request_id: str) -> None:
    for _ in range(100):
        if f"usage request={request_id} " in gateway.log:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"no usage logged for {request_id}")
