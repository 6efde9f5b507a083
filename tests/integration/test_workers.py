"""`server.workers: 2` end to end: one supervisor, two real gateway workers, a real redis-server.

The workers share the listener (SO_REUSEPORT) and the state (Redis). Checked here:
a worker killed under load comes back while the other keeps serving; a per-key
limit of 10 lets exactly 10 of 50 concurrent requests through whichever worker
gets them; the audit log is one chain written by both; the request log holds
every request once; the supervisor's /metrics is the sum of the workers' own;
SIGHUP reloads every worker; SIGTERM drains a stream in flight, then everything exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_process import free_port
from tests.support.redis_server import redis_server
from tests.support.security_stack import REFERENCE_CONFIG, SecurityStack, security_stack

CHAT = {"model": "tiny-a", "messages": [{"role": "user", "content": "x"}]}


@dataclass
class Workers:
    stack: SecurityStack
    admin: str

    def readyz(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(self.admin + "/readyz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def workers(self) -> list[dict[str, object]]:
        return list(self.readyz()[1]["workers"])  # type: ignore[call-overload]

    def wait_all_ready(self, timeout: float = 30.0) -> None:
        self.stack.wait_for(lambda: self.readyz()[0] == 200, timeout, "every worker ready")


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        return str(response.read().decode())


def _sample(page: str, pattern: str) -> float:
    """The sum of the samples whose line matches `pattern` (a regex on the series)."""
    total = 0.0
    for line in page.splitlines():
        series, _, value = line.rpartition(" ")
        if not line.startswith("#") and re.fullmatch(pattern, series):
            total += float(value)
    return total


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    root = tmp_path_factory.mktemp("workers")
    admin_port = free_port()
    with redis_server(root / "redis") as redis:
        config = REFERENCE_CONFIG.replace(
            'server: {state_dir: "{state_dir}"}',
            'server: {state_dir: "{state_dir}", workers: 2, drain_timeout: 20s}',
        ).replace(
            "state: {refresh_interval: 200ms}",
            f'state: {{backend: redis, redis_url: "{redis.url}", refresh_interval: 200ms}}\n'
            f"admin: {{bind: 127.0.0.1:{admin_port}}}",
        )
        (root / "gateway").mkdir()
        with security_stack(root / "gateway", config) as stack:
            running = Workers(stack, f"http://127.0.0.1:{admin_port}")
            running.wait_all_ready()
            yield running


@dataclass
class Load:
    """Requests sent one after another, each on a new connection, from a thread."""

    url: str
    key: str
    results: list[tuple[float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        while not self._stop.is_set():
            try:
                transport = httpx.HTTPTransport(local_address="127.0.2.1")
                with httpx.Client(timeout=5, transport=transport) as client:
                    status: int | str = client.get(self.url, headers=headers).status_code
            except httpx.TransportError as exc:
                status = type(exc).__name__
            self.results.append((time.monotonic(), status))

    def stop(self) -> None:
        self._stop.set()


def test_a_killed_worker_comes_back_while_the_other_keeps_serving(workers: Workers) -> None:
    key = workers.stack.new_key("load", "--rpm", "100000")
    workers.stack.settle()
    first, second = workers.workers()
    load = Load(workers.stack.gateway.url + "/v1/models", key)
    thread = threading.Thread(target=load.run)
    thread.start()
    try:
        workers.stack.wait_for(lambda: len(load.results) >= 20, 10, "load running")
        os.kill(int(first["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
        killed_at = time.monotonic()
        workers.stack.wait_for(
            lambda: (
                workers.workers()[0].get("pid") not in (None, first["pid"])
                and workers.readyz()[0] == 200
            ),
            30,
            "worker 1 back",
        )
        back_at = time.monotonic()
        settled = len(load.results)
        workers.stack.wait_for(lambda: len(load.results) >= settled + 20, 10, "load after")
    finally:
        load.stop()
        thread.join(10)
    # While worker 1 was down, worker 2 answered: requests went on succeeding.
    during = [status for at, status in load.results if killed_at < at < back_at]
    assert during.count(200) >= 1, during
    # Nothing but 200 and the connections the killed worker held (reset, no 5xx).
    assert {status for _, status in load.results} <= {200, "ReadError", "RemoteProtocolError",
                                                      "ConnectError"}  # fmt: skip
    assert all(status == 200 for _, status in load.results[settled:])
    # Worker 2 was never touched; the supervisor counted the restart.
    assert workers.workers()[1]["pid"] == second["pid"]
    assert _sample(_metrics(workers.admin), r'flm_worker_restarts_total\{worker="1"\}') == 1


def workers_client() -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.2.5")
    return httpx.AsyncClient(timeout=20, transport=transport)


async def _burst(url: str, key: str, count: int) -> list[int]:
    async def send() -> int:
        # A connection each: the kernel spreads them over both workers.
        async with workers_client() as client:
            headers = {"authorization": f"Bearer {key}"}
            response = await client.post(url + "/v1/chat/completions", headers=headers, json=CHAT)
            return response.status_code

    return list(await asyncio.gather(*(send() for _ in range(count))))


async def test_a_limit_of_ten_lets_ten_of_fifty_through_two_workers(workers: Workers) -> None:
    key = workers.stack.new_key("burst")
    workers.stack.settle()
    before = [_sample(_metrics(w), r"flm_rejections_total\{.*\}") for w in _worker_urls(workers)]
    statuses = await asyncio.wait_for(_burst(workers.stack.gateway.url, key, 50), 60)
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    after = [_sample(_metrics(w), r"flm_rejections_total\{.*\}") for w in _worker_urls(workers)]
    # Both workers refused some: the limit is shared, not each worker's own.
    assert all(b > a for a, b in zip(before, after, strict=True))


def _worker_urls(workers: Workers) -> list[str]:
    return [f"http://{w['admin']}" for w in workers.workers()]


def test_metrics_are_the_sum_of_the_workers(workers: Workers) -> None:
    key = workers.stack.new_key("metrics", "--rpm", "100000")
    workers.stack.settle()
    series = r'flm_requests_total\{listener="main".*status="200"\}'
    with workers.stack.client("127.0.2.2") as client:
        for _ in range(30):  # a new connection each time: the kernel spreads them
            client.get(
                workers.stack.gateway.url + "/v1/models",
                headers={"authorization": f"Bearer {key}", "connection": "close"},
            )
    own = [_sample(_metrics(url), series) for url in _worker_urls(workers)]
    summed = _sample(_metrics(workers.admin), series)
    assert all(count > 0 for count in own), own
    assert summed == sum(own)


def test_one_audit_chain_and_one_request_log(workers: Workers) -> None:
    stack = workers.stack
    key = stack.new_key("logged", "--rpm", "100000")
    stack.settle()
    for _ in range(12):
        assert stack.status("/v1/models", key=key, source="127.0.2.3") == 200
    # Both workers wrote the audit log (config.loaded at start); it is one valid chain.
    code, out = stack.cli("security", "audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"], out
    _, dump = stack.cli("security", "audit", "--json", "--limit", "10000")
    loaded = [e for e in json.loads(dump) if e["type"] == "config.loaded"]
    assert len(loaded) >= 2
    # One request log: every request once, whichever worker answered it.
    stack.wait_for(lambda: len(_logged(stack)) == 12, 10, "12 logged requests")


def _logged(stack: SecurityStack) -> list[dict[str, object]]:
    code, out = stack.cli("logs", "--json", "--ip", "127.0.2.3", "--limit", "1000")
    assert code == 0, out
    return list(json.loads(out))


def test_sighup_reloads_every_worker(workers: Workers) -> None:
    stack = workers.stack
    ok = r'flm_config_reloads_total\{result="ok"\}'
    before = [_sample(_metrics(url), ok) for url in _worker_urls(workers)]
    assert stack.status("/.git/config", source="127.0.3.99") == 401  # not a decoy yet
    path = stack.gateway.config_path
    path.write_text(path.read_text().replace('"/wp-admin"]', '"/wp-admin", "/.git/config"]'))
    stack.gateway.signal(signal.SIGHUP)
    stack.wait_for(
        lambda: (
            [_sample(_metrics(u), ok) for u in _worker_urls(workers)]
            == [count + 1 for count in before]
        ),
        15,
        "both workers reloaded",
    )
    # The new decoy answers (200, fake content) on every connection, whichever worker takes it.
    sources = [f"127.0.3.{n}" for n in range(1, 9)]
    assert [stack.status("/.git/config", source=source) for source in sources] == [200] * 8


def test_sigterm_drains_the_stream_in_flight_then_everything_exits(
    tmp_path: Path, workers: Workers
) -> None:
    """Last: stops the module's gateway."""
    stack = workers.stack
    key = stack.new_key("drain", "--rpm", "100000")
    stack.settle()
    pids = [int(w["pid"]) for w in workers.workers()]  # type: ignore[call-overload]
    body = {**CHAT, "stream": True, "x_fake": {"chunks": 20, "chunk_delay": 0.1}}
    with (
        stack.client("127.0.2.4") as client,
        client.stream(
            "POST",
            stack.gateway.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json=body,
        ) as response,
    ):
        assert response.status_code == 200
        stack.gateway.signal(signal.SIGTERM)
        text = b"".join(response.iter_bytes()).decode()
    assert text.rstrip().endswith("data: [DONE]")
    assert stack.gateway.process.wait(30) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
