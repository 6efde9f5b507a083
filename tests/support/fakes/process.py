"""Run a fake engine as its own process, for integration tests and benchmarks.

`python -m tests.support.fake_engines --kind vllm --port 18001 --models tiny-a,tiny-b`
prints `READY http://127.0.0.1:PORT` on stdout once it listens, and runs until SIGTERM
or SIGINT. It uses uvloop when it is installed. `start_fake_engine_process()` starts one,
waits (bounded) for that line and kills the process on exit. A test drives and observes
it through the control paths of `engine.py` (`/_fake/stats`, `/_fake/fault`, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tests.support.fakes.engine import KINDS, FakeEngine

READY_PREFIX = "READY "
REPO_ROOT = Path(__file__).resolve().parents[3]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_engines",
        description="Serve one fake LLM engine on 127.0.0.1.",
    )
    parser.add_argument("--kind", choices=sorted(KINDS), default="openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--models", default="", help="comma-separated; default per kind")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per answer")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY")
    parser.add_argument(
        "--loading-seconds",
        type=float,
        default=0.0,
        help="answer 503 'loading' for this long after start",
    )
    parser.add_argument(
        "--max-records", type=int, default=10_000, help="requests kept for /_fake/requests"
    )
    return parser


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None to use asyncio's own loop."""
    try:
        module = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
    return factory


async def serve(args: argparse.Namespace) -> None:
    models = [m for m in args.models.split(",") if m] or None
    engine = FakeEngine(
        args.kind,
        models,
        host=args.host,
        port=args.port,
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
        api_key=args.api_key,
        loading_seconds=args.loading_seconds,
        max_records=args.max_records,
    )
    await engine.start()
    print(READY_PREFIX + engine.url, flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        await engine.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop_factory()) as runner:
        runner.run(serve(args))
    return 0


def _wait_ready(process: subprocess.Popen[bytes], timeout: float) -> str:
    """Read the child's stdout until its READY line; fail after `timeout` seconds."""
    if process.stdout is None:
        raise RuntimeError("the fake engine's stdout is not a pipe")
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                data = os.read(process.stdout.fileno(), 4096)
                if not data:
                    break
                buffer += data
                for line in buffer.decode(errors="replace").splitlines():
                    if line.startswith(READY_PREFIX):
                        return line.removeprefix(READY_PREFIX).strip()
            if process.poll() is not None:
                break
    status = process.poll()
    reason = f"exited with {status}" if status is not None else f"not ready in {timeout}s"
    raise RuntimeError(f"fake engine {reason}; its stdout: {buffer.decode(errors='replace')!r}")


@contextlib.contextmanager
def start_fake_engine_process(
    kind: str,
    models: Sequence[str] | None = None,
    *,
    port: int = 0,
    chunks: int | None = None,
    chunk_delay: float | None = None,
    api_key: str | None = None,
    loading_seconds: float | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 15.0,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start `python -m tests.support.fake_engines`; yield (process, url); kill it on exit."""
    command = [
        sys.executable,
        "-m",
        "tests.support.fake_engines",
        "--kind",
        kind,
        "--port",
        str(port),
    ]
    options: dict[str, object | None] = {
        "--models": ",".join(models) if models else None,
        "--chunks": chunks,
        "--chunk-delay": chunk_delay,
        "--api-key": api_key,
        "--loading-seconds": loading_seconds,
    }
    for flag, value in options.items():
        if value is not None:
            command += [flag, str(value)]
    command += list(extra_args)
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        yield process, _wait_ready(process, ready_timeout)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
