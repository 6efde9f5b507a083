"""The two load generators: wrk (C, keep-alive) for request/response, a small SSE client.

`run_wrk` runs wrk with `chat.lua` for a fixed time and returns what its `done()` printed
plus wrk's own CPU time (from the kernel's accounting of the reaped child).
`sse_streams` opens one keep-alive connection and asks for `count` streamed chat
completions one after the other, recording for each the time until the first `data:`
line and until the end of the stream.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.targets import CHAT_PATH, MODEL

LUA = Path(__file__).with_name("chat.lua")


def stream_body(max_tokens: int = 64) -> bytes:
    """A streamed chat completion request (the fake engine sends at most `max_tokens` chunks)."""
    return json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello in one word."},
            ],
            "max_tokens": max_tokens,
        }
    ).encode()


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    client_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, connections: int, seconds: float) -> WrkResult:
    """wrk -t1 -c`connections` for `seconds` against `url` + CHAT_PATH."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url + CHAT_PATH,
        "--",
        MODEL,
    ]
    before = _children_cpu()
    # Only wrk is reaped while it runs, so the children's CPU delta is wrk's.
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    client_cpu = _children_cpu() - before
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH "))
    errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        client_cpu_s=client_cpu,
    )


@dataclass(frozen=True)
class StreamTiming:
    ttfc_ms: float
    total_ms: float
    events: int


async def _one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> StreamTiming:
    start = time.perf_counter()
    first: float | None = None
    events = 0
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"stream answered {response.status}: {await response.text()}")
        async for line in response.content:
            if line.startswith(b"data:"):
                if first is None:
                    first = time.perf_counter()
                events += 1
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the stream carried no data: line")
    return StreamTiming((first - start) * 1000, (end - start) * 1000, events)


async def _streams(
    url: str, count: int, timeout: float, body: bytes, headers: dict[str, str]
) -> list[StreamTiming]:
    connector = aiohttp.TCPConnector(limit=1)
    url += CHAT_PATH
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.timeout(timeout):
        await _one_stream(session, url, body, headers)  # opens the connection; not counted
        return [await _one_stream(session, url, body, headers) for _ in range(count)]


def sse_streams(
    url: str,
    count: int,
    timeout: float = 60.0,
    chunks: int | None = None,
    chunk_delay: float | None = None,
) -> list[StreamTiming]:
    """`count` paced streams, one at a time on one keep-alive connection (uvloop if present).

    `chunks` and `chunk_delay` override the fake engine's defaults for these streams
    (its `x-fake-chunks` and `x-fake-chunk-delay` request headers)."""
    headers = {"Content-Type": "application/json"}
    body = stream_body()
    if chunks is not None:
        headers["x-fake-chunks"] = str(chunks)
        body = stream_body(max_tokens=chunks)
    if chunk_delay is not None:
        headers["x-fake-chunk-delay"] = str(chunk_delay)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_streams(url, count, timeout, body, headers))
    timings: list[StreamTiming] = uvloop.run(_streams(url, count, timeout, body, headers))
    return timings
