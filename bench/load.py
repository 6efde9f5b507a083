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
import signal
import subprocess
import time
from collections.abc import Coroutine
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


def _wrk_command(url: str, connections: int, seconds: float, limit: int | None) -> list[str]:
    return [
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
        *([str(limit)] if limit else []),
    ]


def _until_limit(command: list[str], timeout: float) -> tuple[int, str, str]:
    """Run wrk until its script prints BENCH-LIMIT, then SIGINT it (which ends its timer).
    If the bench is interrupted meanwhile, wrk is killed (it would sleep out its -d)."""
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wrk.stdout is not None  # stdout=PIPE above
        head = []
        for line in wrk.stdout:  # ends when wrk exits (its -d is the time-out)
            head.append(line)
            if line.startswith("BENCH-LIMIT"):
                wrk.send_signal(signal.SIGINT)
                break
        out, err = wrk.communicate(timeout=timeout)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    return wrk.returncode, "".join(head) + out, err


def run_wrk(url: str, connections: int, seconds: float, requests: int | None = None) -> WrkResult:
    """wrk -t1 -c`connections` against `url` + CHAT_PATH for `seconds`, or, with `requests`,
    for exactly that many requests (`seconds` is then the time-out)."""
    command = _wrk_command(url, connections, seconds, requests)
    before = _children_cpu()
    # Only wrk is reaped while it runs, so the children's CPU delta is wrk's.
    if requests:
        returncode, stdout, stderr = _until_limit(command, seconds + 30)
    else:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    client_cpu = _children_cpu() - before
    line = next((x for x in stdout.splitlines() if x.startswith("BENCH {")), None)
    if returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({returncode}): {stdout}\n{stderr}")
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
    max_gap_ms: float = 0.0
    """The longest wait between two consecutive `data:` lines."""
    done: bool = True
    """The stream ended with `data: [DONE]`."""


@dataclass
class OpenCount:
    """How many streams are open (answered, not yet ended) now, and the most at once."""

    now: int = 0
    peak: int = 0

    def opened(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def closed(self) -> None:
        self.now -= 1


def stream_request(
    chunks: int | None = None, chunk_delay: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a streamed request; `chunks` and `chunk_delay` override the fake
    engine's defaults for it (its `x-fake-chunks` and `x-fake-chunk-delay` headers)."""
    headers = {"Content-Type": "application/json"}
    body = stream_body()
    if chunks is not None:
        headers["x-fake-chunks"] = str(chunks)
        body = stream_body(max_tokens=chunks)
    if chunk_delay is not None:
        headers["x-fake-chunk-delay"] = str(chunk_delay)
    return body, headers


async def _one_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    count: OpenCount | None = None,
) -> StreamTiming:
    count = count or OpenCount()
    start = time.perf_counter()
    first: float | None = None
    last = start
    events, max_gap, done = 0, 0.0, False
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"stream answered {response.status}: {await response.text()}")
        count.opened()
        try:
            async for line in response.content:
                if line.startswith(b"data:"):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    else:
                        max_gap = max(max_gap, now - last)
                    last = now
                    events += 1
                    done = done or line.strip() == b"data: [DONE]"
        finally:
            count.closed()
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the stream carried no data: line")
    return StreamTiming((first - start) * 1000, (end - start) * 1000, events, max_gap * 1000, done)


async def _streams(
    url: str, count: int, timeout: float, body: bytes, headers: dict[str, str]
) -> list[StreamTiming]:
    connector = aiohttp.TCPConnector(limit=1)
    url += CHAT_PATH
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.timeout(timeout):
        await _one_stream(session, url, body, headers)  # opens the connection; not counted
        return [await _one_stream(session, url, body, headers) for _ in range(count)]


@dataclass(frozen=True)
class StreamLevel:
    """`asked` streams started at once: how many ended whole, and how they were paced."""

    asked: int
    timings: list[StreamTiming]
    failures: list[str]
    peak_open: int
    seconds: float

    @property
    def whole(self) -> int:
        return sum(1 for t in self.timings if t.done)

    @property
    def max_gap_ms(self) -> float:
        return max((t.max_gap_ms for t in self.timings), default=float("nan"))

    def sustained(self, stall_ms: float) -> bool:
        """Every stream ended with [DONE] and none waited longer than `stall_ms` for an event."""
        return self.whole == self.asked and self.max_gap_ms <= stall_ms


async def _concurrent(
    url: str, count: int, body: bytes, headers: dict[str, str], timeout: float
) -> StreamLevel:
    connector = aiohttp.TCPConnector(limit=count, force_close=True)
    tally = OpenCount()
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        jobs = [
            asyncio.wait_for(_one_stream(session, url + CHAT_PATH, body, headers, tally), timeout)
            for _ in range(count)
        ]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    timings = [o for o in outcomes if isinstance(o, StreamTiming)]
    failures = [repr(o) for o in outcomes if not isinstance(o, StreamTiming)]
    return StreamLevel(count, timings, failures, tally.peak, time.perf_counter() - start)


def _run[T](main: Coroutine[object, object, T]) -> T:
    """Run `main` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


def sse_streams(
    url: str,
    count: int,
    timeout: float = 60.0,
    chunks: int | None = None,
    chunk_delay: float | None = None,
) -> list[StreamTiming]:
    """`count` paced streams, one at a time on one keep-alive connection (uvloop if present);
    `chunks` and `chunk_delay` as in `stream_request`."""
    return _run(_streams(url, count, timeout, *stream_request(chunks, chunk_delay)))


def concurrent_streams(
    url: str, count: int, chunks: int, chunk_delay: float, timeout: float = 120.0
) -> StreamLevel:
    """`count` streams at once, each on its own connection, each asking the fake engine for
    `chunks` chunks `chunk_delay` s apart, so that they overlap."""
    body, headers = stream_request(chunks, chunk_delay)
    return _run(_concurrent(url, count, body, headers, timeout))
