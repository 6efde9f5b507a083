"""shared_buckets: the Lua scripts against a real redis-server, and the failure policy."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from flm_gateway.security.ratelimit import Bucket
from flm_gateway.security.shared_buckets import (
    EXPIRY_MARGIN_MS,
    SharedBuckets,
    SharedSpec,
    SharedTokenBucket,
    SharedUnavailable,
    charge_tokens,
)
from tests.support.redis_server import RedisServer, redis_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
async def store(server: RedisServer, raw: redis.Redis) -> AsyncIterator[SharedBuckets]:
    shared = SharedBuckets(server.url, "t:")
    yield shared
    await shared.close()


def _spec(store: SharedBuckets, name: str, capacity: float, rate: float, cost: float) -> SharedSpec:
    return SharedSpec(store.key("*", "key", name, "requests"), capacity, rate, cost)


async def test_all_or_nothing_across_two_buckets(store: SharedBuckets, raw: redis.Redis) -> None:
    wide, narrow = _spec(store, "wide", 3, 0.001, 1), _spec(store, "narrow", 1, 0.001, 1)
    first = await store.take([wide, narrow])
    assert first.admitted and [round(b.level, 2) for b in first.buckets] == [2.0, 0.0]
    refused = await store.take([wide, narrow])
    assert not refused.admitted
    # Nothing was taken from the bucket that had room: checked first, charged only if all admit.
    assert [round(b.level, 2) for b in refused.buckets] == [2.0, 0.0]
    assert round(float(raw.hget(wide.key, "level") or 0), 2) == 2.0
    assert (await store.take([wide])).admitted
    assert wide.key.startswith("t:rl:{*|key|wide}")


async def test_refill_uses_the_servers_clock(store: SharedBuckets, raw: redis.Redis) -> None:
    fast = _spec(store, "fast", 2, 20.0, 1)  # 1200/min: one request back every 50 ms
    assert [(await store.take([fast])).admitted for _ in range(3)] == [True, True, False]
    refused = await store.take([fast])
    wait = refused.buckets[0].seconds_until(1.0)
    assert 0 < wait <= 0.05
    seconds, micros = raw.time()
    assert abs(refused.buckets[0].updated - (seconds + micros / 1e6)) < 1.0
    await asyncio.sleep(wait + 0.01)
    assert (await store.take([fast])).admitted


async def test_token_buckets_admit_above_zero_and_go_into_debt(
    store: SharedBuckets, raw: redis.Redis
) -> None:
    tokens = SharedSpec(store.key("*", "ip", "10.0.0.1", "tokens"), 10, 0.001, 0.0)
    assert (await store.take([tokens])).admitted
    assert raw.exists(tokens.key) == 0  # admitting takes nothing, so nothing is written
    (level,) = await store.charge([tokens], 30)
    assert round(level, 2) == -20.0
    refused = await store.take([tokens])
    assert not refused.admitted and refused.buckets[0].remaining() == 0
    assert refused.buckets[0].seconds_until(1e-9) == pytest.approx(20 / 0.001, rel=0.01)


async def test_every_write_expires_when_the_bucket_would_be_full(
    store: SharedBuckets, raw: redis.Redis
) -> None:
    minute = _spec(store, "ttl", 10, 10 / 60, 1)  # 10/min: one request refills in 6 s
    await store.take([minute])
    assert 6000 + EXPIRY_MARGIN_MS - 100 <= raw.pttl(minute.key) <= 6000 + EXPIRY_MARGIN_MS
    tokens = SharedSpec(store.key("*", "key", "ttl", "tokens"), 60, 1.0, 0.0)
    await store.charge([tokens], 90)  # 30 in debt: 90 s until full again
    assert 90_000 + EXPIRY_MARGIN_MS - 100 <= raw.pttl(tokens.key) <= 90_000 + EXPIRY_MARGIN_MS


async def test_a_smaller_limit_after_a_reload_applies_at_once(store: SharedBuckets) -> None:
    before = _spec(store, "reload", 10, 0.001, 1)
    await store.take([before])
    after = _spec(store, "reload", 2, 0.001, 1)
    decision = await store.take([after])
    assert decision.admitted and round(decision.buckets[0].level, 2) == 1.0
    assert (await store.take([after])).admitted and not (await store.take([after])).admitted


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_unreachable_redis_raises_and_is_not_retried_for_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    store = SharedBuckets(f"redis://127.0.0.1:{_closed_port()}/0", "t:", clock=clock)
    spec = _spec(store, "x", 1, 1, 1)
    with caplog.at_level(logging.WARNING, "flm_gateway.ratelimit"):
        assert store.available()
        with pytest.raises(SharedUnavailable):
            await store.take([spec])
        assert not store.available()
        clock.now += 2.5
        assert store.available()  # one probe...
        assert not store.available()  # ...per retry interval
        with pytest.raises(SharedUnavailable):
            await store.charge([spec], 1)
    assert caplog.text.count("did not answer") == 1  # one warning per outage
    local = Bucket.per_minute(60, None, 0.0)
    shared = SharedTokenBucket(store, spec, lambda: local)
    clock.now += 2.5
    await charge_tokens([shared], 25.0, 0.0)
    assert local.level == 35.0  # charged here while Redis is away
    await store.close()


async def test_a_silent_redis_times_out_quickly() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections (the kernel does), never answers
        port = listener.getsockname()[1]
        store = SharedBuckets(f"redis://127.0.0.1:{port}/0", "t:", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(SharedUnavailable):
            await store.take([_spec(store, "x", 1, 1, 1)])
        assert time.monotonic() - started < 1.0
        await store.close()


async def test_sharing_resumes_when_redis_answers_again(
    server: RedisServer, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = SharedBuckets(server.url, "t:", timeout=0.3, clock=clock)
    spec = _spec(store, "resume", 5, 0.001, 1)
    assert (await store.take([spec])).admitted
    server.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(SharedUnavailable):
            await store.take([spec])
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert not store.available()
    clock.now += 2.5
    with caplog.at_level(logging.INFO, "flm_gateway.ratelimit"):
        assert store.available()
        decision = await store.take([spec])
    # 5 - 1 - this one; the timed-out take was sent before Redis stopped, so Redis may
    # still apply it when it wakes (2.0): a timeout can over-count, never under-count.
    assert decision.admitted and round(decision.buckets[0].level, 2) in (2.0, 3.0)
    assert "answers again" in caplog.text and store.available()
    await store.close()
