"""Rate-limit buckets shared by gateway replicas, kept in Redis: one atomic script per decision.

With `state.backend: redis` the rate limiter keeps its buckets in the state's
Redis server, so N replicas together allow the limit, not N times it (like
Kong's `redis` policy or Envoy's global rate limit). Layout, under
`state.redis_prefix`: `rl:{<scope>|<ip|key>|<subject>}:<requests|tokens>`, a
hash of `level` and `time` (seconds by the Redis server's own clock, `TIME`, so
the replicas' clocks do not matter). Each write sets a PEXPIRE of the time the
bucket needs to refill to full plus `EXPIRY_MARGIN_MS` (a full bucket is the
same as none), so idle buckets vanish. Capacity and rate are passed with every
call, so a reloaded limit applies at once (a level above a smaller capacity is
cut to it, as in memory).

- `take`: one Lua script checks every applicable bucket (a request bucket needs
  its cost, a token bucket anything above zero) and takes from all only if all
  admit; it returns each bucket's level and the server time, from which the
  caller builds the same 429, `Retry-After` and `x-ratelimit-*` as in memory.
- `charge`: one Lua script takes a response's tokens from token buckets,
  possibly into debt.

Failure: every call is bounded by `TIMEOUT` (connect included, no retries). A
failure raises `SharedUnavailable` and the caller limits this request with its
own per-process buckets instead (never unlimited). For `RETRY_INTERVAL` after a
failure calls are not tried (`available()` is false) so an outage costs no
latency; then one call probes, and the first success shares again. One warning
per outage, one info line when Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from flm_gateway.security.ratelimit import Bucket
from flm_gateway.state.redis import redacted_url

log = logging.getLogger("flm_gateway.ratelimit")

TIMEOUT = 0.5
RETRY_INTERVAL = 2.0
MAX_CONNECTIONS = 64
EXPIRY_MARGIN_MS = 1000

# Shared prologue: the server's clock and a refilled level per bucket (ARGV: capacity,
# rate per second, then one more value per bucket: the cost, or for CHARGE nothing).
_REFILL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function refilled(key, capacity, rate)
  local state = redis.call('HMGET', key, 'level', 'time')
  local level, updated = tonumber(state[1]), tonumber(state[2])
  if level == nil then return capacity, now end
  if now > updated then level = level + (now - updated) * rate end
  return math.min(capacity, level), math.max(updated, now)
end
local function store(key, level, updated, capacity, rate, margin)
  redis.call('HSET', key, 'level', tostring(level), 'time', tostring(updated))
  local ms = math.ceil((capacity - level) / rate * 1000) + margin
  redis.call('PEXPIRE', key, string.format('%.0f', ms))
end
"""

# KEYS: buckets. ARGV: margin, then per bucket capacity, rate, cost. Cost > 0: needs the
# cost and takes it; cost 0 (LLM tokens): admits while the level is above zero, takes nothing.
# Returns {admitted 1|0, server time, level per bucket (after taking, if admitted)}.
TAKE = (
    _REFILL
    + """
local margin = tonumber(ARGV[1])
local levels, times, admitted = {}, {}, 1
for i, key in ipairs(KEYS) do
  local capacity, rate, cost = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  levels[i], times[i] = refilled(key, capacity, rate)
  if (cost > 0 and levels[i] < cost) or (cost == 0 and levels[i] <= 0) then admitted = 0 end
end
local reply = {admitted, tostring(now)}
for i, key in ipairs(KEYS) do
  local capacity, rate, cost = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  if admitted == 1 and cost > 0 then
    levels[i] = levels[i] - cost
    store(key, levels[i], times[i], capacity, rate, margin)
  end
  reply[i + 2] = tostring(levels[i])
end
return reply
"""
)

# KEYS: token buckets. ARGV: margin, amount, then per bucket capacity, rate.
# Takes `amount` from each, possibly into debt. Returns the levels after.
CHARGE = (
    _REFILL
    + """
local margin, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
local reply = {}
for i, key in ipairs(KEYS) do
  local capacity, rate = tonumber(ARGV[2*i+1]), tonumber(ARGV[2*i+2])
  local level, updated = refilled(key, capacity, rate)
  level = level - amount
  store(key, level, updated, capacity, rate, margin)
  reply[i] = tostring(level)
end
return reply
"""
)


class SharedUnavailable(Exception):
    """Redis did not answer in time (or at all): limit with the local buckets instead."""


@dataclass(frozen=True)
class SharedSpec:
    """One bucket of a decision: its Redis key, capacity, refill per second and cost."""

    key: str
    capacity: float
    rate: float
    cost: float = 0.0


@dataclass(frozen=True)
class SharedDecision:
    admitted: bool
    buckets: list[Bucket]
    """Snapshots after the decision (in the order given), for headers and Retry-After."""


@dataclass(frozen=True)
class SharedTokenBucket:
    """A token bucket a request was admitted against, for `token_charge` to charge."""

    store: SharedBuckets
    spec: SharedSpec
    local: Callable[[], Bucket]
    """This process's bucket for the same limit: charged instead while Redis is away."""


class SharedBuckets:
    """Token buckets in one Redis server, shared by every replica that uses it."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout: float = TIMEOUT,
        retry_interval: float = RETRY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = (url, prefix)
        self._url = redacted_url(url)
        self._prefix = prefix + "rl:"
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0
        # Any: redis-py types replies as bytes | str whatever decode_responses says.
        # A blocking pool: a burst waits for a free connection (within the same timeout)
        # instead of failing with "too many connections".
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis: Any = redis.asyncio.Redis(connection_pool=pool)
        self._take = self._redis.register_script(TAKE)
        self._charge = self._redis.register_script(CHARGE)

    def key(self, scope: str, kind: str, subject: str, what: str) -> str:
        # The braces are a hash tag: one decision's keys share a Redis Cluster slot.
        return f"{self._prefix}{{{scope}|{kind}|{subject}}}:{what}"

    def available(self) -> bool:
        """False while Redis recently failed; once per `retry_interval` true again, to probe."""
        if self._down_since is None:
            return True
        now = self._clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self._retry_interval
        return True

    async def take(self, specs: Sequence[SharedSpec]) -> SharedDecision:
        args: list[float] = [EXPIRY_MARGIN_MS]
        for spec in specs:
            args += [spec.capacity, spec.rate, spec.cost]
        reply = await self._call(self._take, [spec.key for spec in specs], args)
        now = float(reply[1])
        buckets = [
            Bucket(spec.capacity, spec.rate, float(level), now)
            for spec, level in zip(specs, reply[2:], strict=True)
        ]
        return SharedDecision(int(reply[0]) == 1, buckets)

    async def charge(self, specs: Sequence[SharedSpec], amount: float) -> list[float]:
        """Take `amount` from every bucket (into debt if need be); the levels after."""
        args: list[float] = [EXPIRY_MARGIN_MS, amount]
        for spec in specs:
            args += [spec.capacity, spec.rate]
        reply = await self._call(self._charge, [spec.key for spec in specs], args)
        return [float(level) for level in reply]

    async def _call(self, script: Any, keys: list[str], args: list[float]) -> list[Any]:
        try:
            async with asyncio.timeout(self._timeout):
                reply: list[Any] = await script(keys=keys, args=args)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise SharedUnavailable(str(exc) or type(exc).__name__) from None
        if self._down_since is not None:
            log.info(
                "shared rate limits: redis %s answers again after %.1fs; limits are shared again",
                self._url,
                self._clock() - self._down_since,
            )
            self._down_since = None
        return reply

    def _failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._retry_at = now + self._retry_interval
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "shared rate limits: redis %s did not answer (%s); limiting per process "
                "(each replica on its own) until it does",
                self._url,
                str(exc) or type(exc).__name__,
            )

    async def close(self) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            await self._redis.aclose(close_connection_pool=True)


async def charge_tokens(buckets: Sequence[SharedTokenBucket], amount: float, now: float) -> None:
    """Charge `amount` to shared token buckets; to the local ones while Redis is away."""
    for store in {id(b.store): b.store for b in buckets}.values():
        mine = [b for b in buckets if b.store is store]
        if store.available():
            try:
                await store.charge([b.spec for b in mine], amount)
                continue
            except SharedUnavailable:
                pass
        for bucket in mine:
            local = bucket.local()
            local.refill(now)
            local.take(amount)
