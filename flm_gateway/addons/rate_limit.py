"""Rate limits per client address and per API key: requests and tokens per minute.

Policy (on `requestheaders`). The pipeline holds two instances: `RateLimiter("ip")`
early, before decoys, intrusion detection and authentication, so floods without
a key are limited too; `RateLimiter("key")` after authentication, which knows the key.
- A client is its address; IPv6 clients are grouped by `security.ipv6_prefix` (/64).
- Limits come from the listener's `security.rate_limits` (`per_ip`, `per_key`);
  a key's own `limits` override `per_key`. Listeners sharing the global section
  share buckets; a listener with its own section has its own.
- Requests: token buckets (`burst`, default one minute's worth, refilled at
  `requests_per_minute`/60 per second). The applicable buckets are checked
  first and charged only if all admit, in one synchronous step: on the event
  loop nothing runs in between, so with a limit of N exactly N of any number
  of concurrent requests pass. (A request the per-key limit refuses has
  already spent its per-IP token: it was sent.)
- Tokens: a request is admitted while the client's token bucket is above zero;
  the buckets go into `flm.ratelimit.tokens.<ip|key>` and `token_charge`
  charges them the real usage (`flm.usage`, from `token_accounting`) when the
  response ends, possibly into debt.
- Refused: 429 `rate_limit_exceeded` with `Retry-After` (whole seconds) and the
  headers below. Recorded as `ratelimit.exceeded` (no offence: being limited is
  not an attack).
- Every response of a limited client carries OpenAI's headers for the
  tightest applicable limit (per IP or per key, whichever has less left):
  `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
  `x-ratelimit-reset-requests` (and `-tokens`).
- Health endpoints are exempt. Buckets are kept in memory (a restart forgets
  them); idle (full) buckets are dropped every minute, and at most
  `MAX_BUCKETS` are kept.
Reads `flm.auth.key`, `flm.client_ip`; writes `flm.ratelimit.headers` and
`flm.ratelimit.tokens.<ip|key>`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed
from flm_gateway.background import BackgroundTask
from flm_gateway.config import LoadedConfig
from flm_gateway.config.security import RateLimit, RateLimitSettings, Severity
from flm_gateway.errors import error_response
from flm_gateway.security.events import record
from flm_gateway.security.netset import client_subject
from flm_gateway.security.policies import client_ip, is_health_check, listener_name
from flm_gateway.security.ratelimit import Bucket, format_reset
from flm_gateway.state.store import KeyRecord

MAX_BUCKETS = 200_000
SWEEP_INTERVAL = 60.0
Subject = Literal["ip", "key"]
BucketKey = tuple[str, str, str, str]
"""(scope, "ip"|"key", subject, "requests"|"tokens")."""


@dataclass(frozen=True)
class _Scope:
    name: str
    settings: RateLimitSettings


@dataclass
class _Applied:
    bucket: Bucket
    limit: int


def _key_limit(base: RateLimit, key: KeyRecord) -> RateLimit:
    limits = key.limits
    if limits.requests_per_minute is None and limits.tokens_per_minute is None:
        return base
    return RateLimit(
        requests_per_minute=limits.requests_per_minute or base.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute or base.tokens_per_minute,
        burst=base.burst if limits.requests_per_minute is None else None,
    )


class RateLimiter:
    def __init__(self, subject: Subject, clock: Callable[[], float] = time.monotonic) -> None:
        self._subject = subject
        self.name = f"ratelimiter-{subject}"  # mitmproxy needs a unique name per instance
        self._clock = clock
        self._scopes: Mapping[str, _Scope] = {}
        self._ipv6_prefix = 64
        self._buckets: dict[BucketKey, Bucket] = {}
        self._background = BackgroundTask("flm-ratelimit-sweep", self._sweeper)

    def apply_config(self, loaded: LoadedConfig) -> None:
        config = loaded.config
        scopes = {}
        for listener in config.listeners:
            own = listener.security.rate_limits if listener.security is not None else None
            settings = own or config.security.rate_limits
            scopes[listener.name] = _Scope(listener.name if own is not None else "*", settings)
        self._scopes = scopes
        self._ipv6_prefix = config.security.ipv6_prefix

    # -- buckets ------------------------------------------------------------

    def _bucket(self, key: BucketKey, per_minute: int, burst: int | None, now: float) -> Bucket:
        bucket = self._buckets.get(key)
        capacity = float(burst or per_minute)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self.sweep(force=True)
            bucket = self._buckets[key] = Bucket.per_minute(per_minute, burst, now)
        elif bucket.capacity != capacity or bucket.rate != per_minute / 60.0:
            bucket.resize(per_minute, burst)
        return bucket

    def _applicable(
        self, scope: _Scope, ip: str, key: KeyRecord | None, now: float
    ) -> tuple[list[_Applied], list[_Applied]]:
        """(request buckets, token buckets) that apply to this client."""
        subjects: list[tuple[str, str, RateLimit]] = []
        if self._subject == "ip":
            subjects.append(("ip", ip, scope.settings.per_ip))
        elif key is not None:
            subjects.append(("key", key.id, _key_limit(scope.settings.per_key, key)))
        requests, tokens = [], []
        for kind, subject, limit in subjects:
            if limit.requests_per_minute is not None:
                bucket = self._bucket(
                    (scope.name, kind, subject, "requests"),
                    limit.requests_per_minute,
                    limit.burst,
                    now,
                )
                requests.append(_Applied(bucket, limit.burst or limit.requests_per_minute))
            if limit.tokens_per_minute is not None:
                bucket = self._bucket(
                    (scope.name, kind, subject, "tokens"), limit.tokens_per_minute, None, now
                )
                tokens.append(_Applied(bucket, limit.tokens_per_minute))
        return requests, tokens

    def sweep(self, force: bool = False) -> int:
        """Drop full buckets (a full bucket is the same as none); the number dropped."""
        now = self._clock()
        idle = [key for key, bucket in self._buckets.items() if bucket.full(now)]
        for key in idle:
            del self._buckets[key]
        if force and len(self._buckets) >= MAX_BUCKETS:
            for key in list(self._buckets)[: len(self._buckets) // 10]:
                del self._buckets[key]
        return len(idle)

    # -- hooks --------------------------------------------------------------

    def running(self) -> None:
        self._background.start()

    async def done(self) -> None:
        await self._background.stop()

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or is_health_check(flow):
            return
        scope = self._scopes.get(listener_name(flow) or "")
        if scope is None:
            return
        now = self._clock()
        key: KeyRecord | None = flow.metadata.get("flm.auth.key")
        subject = client_subject(client_ip(flow), self._ipv6_prefix)
        requests, tokens = self._applicable(scope, subject, key, now)
        if not requests and not tokens:
            return
        # Check everything, then charge: no await in between (atomic on the loop).
        short_requests = [a for a in requests if not a.bucket.can_take(1.0, now)]
        short_tokens = [a for a in tokens if not a.bucket.admits(now)]
        if not short_requests and not short_tokens:
            for applied in requests:
                applied.bucket.take(1.0)
        flow.metadata[f"flm.ratelimit.tokens.{self._subject}"] = [a.bucket for a in tokens]
        headers = _merge(flow.metadata.get("flm.ratelimit.headers"), _headers(requests, tokens))
        flow.metadata["flm.ratelimit.headers"] = headers
        if short_requests or short_tokens:
            wait = max(
                [a.bucket.seconds_until(1.0) for a in short_requests]
                + [a.bucket.seconds_until(1e-9) for a in short_tokens]
            )
            headers = dict(headers)
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            what = "requests" if short_requests else "tokens"
            record(flow, "ratelimit.exceeded", Severity.LOW, None, limit=what)
            flow.response = error_response(
                429,
                f"Rate limit reached for {what}; retry after {headers['retry-after']}s.",
                code="rate_limit_exceeded",
                headers=headers,
            )

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        headers: dict[str, str] | None = flow.metadata.get("flm.ratelimit.headers")
        if headers and flow.response is not None:
            for name, value in headers.items():
                flow.response.headers[name] = value


def _tightest(applied: list[_Applied]) -> _Applied | None:
    return min(
        applied, key=lambda a: (a.bucket.remaining(), -a.bucket.reset_seconds()), default=None
    )


def _headers(requests: list[_Applied], tokens: list[_Applied]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for suffix, applied in (("requests", _tightest(requests)), ("tokens", _tightest(tokens))):
        if applied is None:
            continue
        headers[f"x-ratelimit-limit-{suffix}"] = str(applied.limit)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(applied.bucket.remaining())
        headers[f"x-ratelimit-reset-{suffix}"] = format_reset(applied.bucket.reset_seconds())
    return headers


def _merge(old: dict[str, str] | None, new: dict[str, str]) -> dict[str, str]:
    """Per kind (requests, tokens), the headers of whichever limit has less remaining."""
    if not old:
        return new
    merged = dict(old)
    for suffix in ("requests", "tokens"):
        remaining = f"x-ratelimit-remaining-{suffix}"
        if remaining in new and (
            remaining not in merged or int(new[remaining]) <= int(merged[remaining])
        ):
            for name in ("limit", "remaining", "reset"):
                merged[f"x-ratelimit-{name}-{suffix}"] = new[f"x-ratelimit-{name}-{suffix}"]
    return merged
