"""rate_limit: exact request buckets per IP and key, token debt, OpenAI headers; shared
buckets in a real redis-server when the state backend is Redis, and the local fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http

from flm_gateway.addons.rate_limit import RateLimiter
from flm_gateway.addons.token_charge import TokenCharge
from flm_gateway.config import LoadedConfig
from flm_gateway.proxy.flow_meta import (
    AUTH_KEY,
    RATELIMIT_HEADERS,
    ROUTE_ENGINE,
    SECURITY_EVENTS,
    USAGE,
)
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import KeyLimits, KeyRecord
from tests.support.flows import configure, error_of
from tests.support.redis_server import redis_server
from tests.support.security import BASE, flow, loaded, run_hooks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(key_id: str = "key_a", **limits: int) -> KeyRecord:
    return KeyRecord(id=key_id, name=key_id, created_at=0.0, secrets=(), limits=KeyLimits(**limits))


async def test_exactly_n_of_5n_concurrent_requests_pass(tmp_path: Path) -> None:
    config = loaded("rate_limits: {per_key: {requests_per_minute: 10}}", tmp_path)
    limiter = RateLimiter("key")
    configure(config, limiter)
    key = _key()

    async def one() -> int:
        target = flow(config)
        AUTH_KEY.set(target, key)
        await asyncio.sleep(0)
        await run_hooks([limiter], target, ("requestheaders",))
        return 200 if target.response is None else target.response.status_code

    statuses = await asyncio.gather(*(one() for _ in range(50)))
    assert statuses.count(200) == 10 and statuses.count(429) == 40


async def test_headers_retry_after_and_refill(tmp_path: Path) -> None:
    config = loaded("rate_limits: {per_ip: {requests_per_minute: 60, burst: 2}}", tmp_path)
    clock = Clock()
    limiter = RateLimiter("ip", clock)
    configure(config, limiter)
    results = []
    for _ in range(3):
        target = flow(config)
        await run_hooks([limiter], target, ("requestheaders",))
        results.append(target)
    assert [t.response is None for t in results] == [True, True, False]
    refused = results[2]
    status, error = error_of(refused)
    assert (status, error["code"]) == (429, "rate_limit_exceeded")
    assert refused.response is not None
    headers = refused.response.headers
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "2s"
    assert [e.type for e in SECURITY_EVENTS.require(refused)] == ["ratelimit.exceeded"]
    # A passed request carries the headers on its (engine's) response too.
    results[0].response = http.Response.make(200, b"{}")
    limiter.responseheaders(results[0])
    assert results[0].response.headers["x-ratelimit-remaining-requests"] == "1"
    clock.now += 1.0
    again = flow(config)
    await run_hooks([limiter], again, ("requestheaders",))
    assert again.response is None


async def test_per_ip_and_per_key_both_apply_and_keys_override(tmp_path: Path) -> None:
    config = loaded(
        "rate_limits: {per_ip: {requests_per_minute: 5}, per_key: {requests_per_minute: 2}}",
        tmp_path,
    )
    clock = Clock()
    by_ip, by_key = RateLimiter("ip", clock), RateLimiter("key", clock)
    configure(config, by_ip)
    configure(config, by_key)

    async def send(key: KeyRecord | None, ip: str = "10.0.0.1") -> http.HTTPFlow:
        target = flow(config, ip=ip)
        if key is not None:
            AUTH_KEY.set(target, key)  # as auth, which runs between the two
        await run_hooks([by_ip, by_key], target, ("requestheaders",))
        return target

    async def status(key: KeyRecord | None, ip: str = "10.0.0.1") -> int:
        target = await send(key, ip)
        return 200 if target.response is None else target.response.status_code

    small, big = _key("small"), _key("big", requests_per_minute=100)
    assert [await status(small) for _ in range(3)] == [200, 200, 429]
    # The per-key refusal still spent an IP token (3 of 5 used): 2 left for anyone.
    assert [await status(big) for _ in range(3)] == [200, 200, 429]
    assert await status(None) == 429
    assert await status(big, ip="10.0.0.2") == 200
    # Headers show the tightest limit: the key's (2/min) while it has less left.
    clock.now += 120
    target = await send(small, ip="10.0.0.3")
    headers = RATELIMIT_HEADERS.require(target)
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"]) == (
        "2",
        "1",
    )


async def test_tokens_are_charged_after_the_fact(tmp_path: Path) -> None:
    config = loaded("rate_limits: {per_key: {tokens_per_minute: 600}}", tmp_path)
    clock = Clock()
    limiter = RateLimiter("key", clock)
    configure(config, limiter)
    charge = TokenCharge(StateService(), clock)
    key = _key()

    async def send(used: int | None = None) -> int:
        target = flow(config)
        AUTH_KEY.set(target, key)
        await run_hooks([limiter], target, ("requestheaders",))
        if target.response is not None:
            return target.response.status_code
        ROUTE_ENGINE.set(target, "alpha")  # forwarded
        if used is not None:
            USAGE.set(
                target,
                {
                    "prompt_tokens": used,
                    "completion_tokens": 0,
                    "estimated": True,
                },
            )
        charge.response(target)
        charge.error(target)  # charged once, however the flow ends
        return 200

    assert await send(1000) == 200  # admitted with 600 left, now 400 in debt
    assert await send() == 429
    clock.now += 40.0  # 400 tokens refilled: level 0, still nothing left
    assert await send() == 429
    clock.now += 1.0
    assert await send() == 200
    assert await send() == 200  # no usage reported: nothing charged


async def test_health_is_exempt_and_idle_buckets_are_swept(tmp_path: Path) -> None:
    config = loaded("rate_limits: {per_ip: {requests_per_minute: 1}}", tmp_path)
    clock = Clock()
    limiter = RateLimiter("ip", clock)
    configure(config, limiter)
    for _ in range(3):
        health = flow(config, path="/healthz")
        await run_hooks([limiter], health, ("requestheaders",))
        assert health.response is None
    await run_hooks([limiter], flow(config), ("requestheaders",))
    assert limiter.sweep() == 0
    clock.now += 61
    assert limiter.sweep() == 1


async def test_ipv6_addresses_of_one_prefix_share_a_bucket(tmp_path: Path) -> None:
    config = loaded("rate_limits: {per_ip: {requests_per_minute: 2}}", tmp_path)
    limiter = RateLimiter("ip", Clock())
    configure(config, limiter)
    statuses = []
    for ip in ("2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8:0:1::1"):
        target = flow(config, ip=ip)
        await run_hooks([limiter], target, ("requestheaders",))
        statuses.append(200 if target.response is None else target.response.status_code)
    assert statuses == [200, 200, 429, 200]


# -- shared buckets (state.backend: redis) -------------------------------------------


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


def _redis_config(security: str, tmp_path: Path, url: str, prefix: str) -> LoadedConfig:
    state = f'state: {{backend: redis, redis_url: "{url}", redis_prefix: "{prefix}"}}\n'
    return loaded(security, tmp_path, base=BASE + state)


async def test_sqlite_keeps_the_synchronous_in_memory_path(tmp_path: Path) -> None:
    config = loaded("rate_limits: {per_ip: {requests_per_minute: 1}}", tmp_path)
    limiter = RateLimiter("ip")
    configure(config, limiter)
    assert limiter.requestheaders(flow(config)) is None  # decided at once, no coroutine
    refused = flow(config)
    assert limiter.requestheaders(refused) is None and error_of(refused)[0] == 429


async def test_replicas_share_one_limit(tmp_path: Path, redis_url: str) -> None:
    config = _redis_config(
        "rate_limits: {per_key: {requests_per_minute: 10}}", tmp_path, redis_url, "share:"
    )
    replicas = [RateLimiter("key"), RateLimiter("key")]
    for replica in replicas:
        configure(config, replica)
    key = _key()

    async def one(index: int) -> http.HTTPFlow:
        target = flow(config)
        AUTH_KEY.set(target, key)
        await run_hooks([replicas[index % 2]], target, ("requestheaders",))
        return target

    flows = await asyncio.gather(*(one(i) for i in range(50)))
    statuses = [200 if f.response is None else f.response.status_code for f in flows]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    refused = next(f.response for f in flows if f.response is not None)
    assert refused.headers["retry-after"] == "6"  # one request back every 6 s
    assert refused.headers["x-ratelimit-limit-requests"] == "10"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    passed = next(f for f in flows if f.response is None)
    assert RATELIMIT_HEADERS.require(passed)["x-ratelimit-limit-requests"] == "10"
    for replica in replicas:
        await replica.done()


async def test_shared_tokens_are_charged_in_redis(tmp_path: Path, redis_url: str) -> None:
    config = _redis_config(
        "rate_limits: {per_key: {tokens_per_minute: 600}}", tmp_path, redis_url, "tokens:"
    )
    first, second = RateLimiter("key"), RateLimiter("key")
    configure(config, first)
    configure(config, second)
    charge = TokenCharge(StateService())
    key = _key()

    async def send(limiter: RateLimiter, used: int = 0) -> int:
        target = flow(config)
        AUTH_KEY.set(target, key)
        await run_hooks([limiter], target, ("requestheaders",))
        if target.response is not None:
            return target.response.status_code
        ROUTE_ENGINE.set(target, "alpha")  # forwarded
        USAGE.set(target, {"prompt_tokens": used, "completion_tokens": 0})
        pending = charge.response(target)
        assert pending is not None  # shared buckets: charged in Redis, awaited
        await pending
        return 200

    assert await send(first, 1000) == 200  # 400 in debt, in Redis
    assert await send(second) == 429  # the other replica sees the debt
    for limiter in (first, second):
        await limiter.done()


async def test_redis_away_falls_back_to_local_buckets(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        config = _redis_config(
            "rate_limits: {per_ip: {requests_per_minute: 3}}", tmp_path, server.url, "away:"
        )
        limiter = RateLimiter("ip")
        configure(config, limiter)
        server.process.terminate()
        server.process.wait(5)
        statuses = []
        for _ in range(5):
            target = flow(config)
            await run_hooks([limiter], target, ("requestheaders",))
            statuses.append(200 if target.response is None else target.response.status_code)
        assert statuses == [200, 200, 200, 429, 429]  # limited here: not unlimited, not 500
        await limiter.done()
