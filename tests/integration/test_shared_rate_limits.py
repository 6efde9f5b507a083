"""Shared rate limits end to end: two real gateway processes on one real redis-server.

With `state.backend: redis` the replicas share their buckets, so 50 concurrent
requests spread over both at a per-key limit of 10 let exactly 10 through. With
Redis frozen (SIGSTOP: it neither answers nor refuses), each process limits with
its own buckets (not unlimited, not 500), and shares again once Redis answers.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from tests.support.redis_server import RedisServer, redis_server
from tests.support.security_stack import REFERENCE_CONFIG, SecurityStack, security_stack


@dataclass
class Replicas:
    redis: RedisServer
    first: SecurityStack
    second: SecurityStack


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("shared")
    with redis_server(root / "redis") as redis, ExitStack() as stack:
        # stale_after well above the outage below: the keys and blocks stay usable.
        config = REFERENCE_CONFIG.replace(
            "state: {refresh_interval: 200ms}",
            f'state: {{backend: redis, redis_url: "{redis.url}", refresh_interval: 200ms, '
            "stale_after: 60s}",
        )
        gateways = []
        for name in ("a", "b"):
            directory = root / name
            directory.mkdir()
            gateways.append(stack.enter_context(security_stack(directory, config)))
        yield Replicas(redis, *gateways)


async def _send(stack: SecurityStack, key: str, source: str) -> httpx.Response:
    async with stack.async_client(source) as client:
        return await client.post(
            stack.gateway.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "tiny-a", "messages": [{"role": "user", "content": "x"}]},
        )


async def _burst(replicas: Replicas, key: str, count: int, source: str) -> list[httpx.Response]:
    targets = (replicas.first, replicas.second)
    return list(await asyncio.gather(*(_send(targets[i % 2], key, source) for i in range(count))))


async def test_fifty_concurrent_requests_over_two_replicas_let_ten_through(
    replicas: Replicas,
) -> None:
    key = replicas.first.new_key("shared-burst")
    replicas.first.settle()
    responses = await asyncio.wait_for(_burst(replicas, key, 50, "127.0.1.1"), 60)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    for refused in (r for r in responses if r.status_code == 429):
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit-requests"] == "10"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # Both replicas answered some of each: the limit is shared, not one replica's.
    served = {r.url.port for r in responses if r.status_code == 429}
    assert len(served) == 2


async def test_redis_frozen_then_back_limits_locally_then_shared(replicas: Replicas) -> None:
    during, after = replicas.first.new_key("outage"), replicas.first.new_key("after")
    probe = replicas.first.new_key("probe")
    replicas.first.settle()
    replicas.redis.process.send_signal(signal.SIGSTOP)
    try:
        for stack in (replicas.first, replicas.second):
            statuses = []
            for _ in range(12):
                response = await asyncio.wait_for(_send(stack, during, "127.0.1.2"), 10)
                statuses.append(response.status_code)
            # Each process on its own: its local per-key bucket of 10. The refusals are
            # 503, not 429: their audit events cannot be made durable while the store is
            # down, and no answer reports an event that is not (docs/security.md, class 10).
            assert statuses == [200] * 10 + [503] * 2
            assert response.json()["error"]["code"] == "security_state_unavailable"
            assert int(response.headers["retry-after"]) >= 1
            assert "limiting per process" in stack.gateway.log
    finally:
        replicas.redis.process.send_signal(signal.SIGCONT)
    # After the retry interval (2 s) the next request probes Redis and sharing resumes.
    time.sleep(2.2)
    for stack in (replicas.first, replicas.second):
        assert (await _send(stack, probe, "127.0.1.3")).status_code == 200
    responses = [await _send(s, after, "127.0.1.4") for s in [replicas.first, replicas.second] * 6]
    # 12 over two replicas: shared, only 10 pass (unshared, each would pass its 6).
    assert [r.status_code for r in responses].count(200) == 10
    assert "limits are shared again" in replicas.first.gateway.log
