"""Helpers of the operations integration tests.

`threaded_engine` runs the shared `FakeEngine` on an event loop in a background
thread, so tests can be plain synchronous code (blocking SDK calls, subprocesses)
while the engine keeps answering, including during the gateway's start-up health
checks. The gateway itself is `tests.support.gateway_process.run_gateway`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import ROOT, GatewayProcess


@contextmanager
def threaded_engine(kind: str, models: list[str], **kwargs: Any) -> Iterator[FakeEngine]:
    """A started `FakeEngine` served from its own thread; stopped on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def make() -> FakeEngine:
        engine = FakeEngine(kind, models, **kwargs)
        await engine.start()
        return engine

    engine = asyncio.run_coroutine_threadsafe(make(), loop).result(10)
    try:
        yield engine
    finally:
        asyncio.run_coroutine_threadsafe(engine.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric_sum(admin_port: int, name: str, **labels: str) -> float:
    """The sum of the samples `name` with these label values, scraped from the admin
    listener's /metrics and read with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = http_get(f"http://127.0.0.1:{admin_port}/metrics")
    assert status == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def post_json(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for_log(gateway: GatewayProcess, text: str, count: int = 1, timeout: float = 10.0) -> str:
    """The gateway's log once `text` appears `count` times in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = gateway.log
        if log.count(text) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged {count}x within {timeout}s:\n{gateway.log}")


def cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m flm_gateway ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "flm_gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )


def write_config(path: Path, text: str) -> None:
    """Replace the config file in one rename, as editors and deploy tools do."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
