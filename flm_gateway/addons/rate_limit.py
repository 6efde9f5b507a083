"""Rate limits per client address and per API key: requests and tokens per minute.

Policy (on `requestheaders`). The pipeline holds two instances: `RateLimiter("ip")`
early, before decoys, intrusion detection and authentication, so floods without
a key are limited too; `RateLimiter("key")` after authentication, which knows the key.
- A client is its address; IPv6 clients are grouped by `security.ipv6_prefix` (/64).
- Limits come from the listener's `security.rate_limits` (`per_ip`, `per_key`);
  a key's own `limits` override `per_key`. Listeners sharing the global section
  share buckets; a listener with its own section has its own
  (`security.ratelimit_scopes`, which `validate --effective` prints).
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
- Shared (`state.backend: redis`, automatic): the buckets live in the state's
  Redis (`security/shared_buckets.py`), checked and charged by one atomic script
  per decision, so replicas share one limit; the hook then awaits that call
  (with SQLite it stays synchronous and purely in memory). If Redis does not
  answer within 0.5 s, or failed in the last 2 s, this process's own buckets
  limit the request instead (fail closed: never unlimited, never a 500), with a
  warning per outage; sharing resumes when Redis answers.
Reads `flm.auth.key`, `flm.client_ip`; writes `flm.ratelimit.headers` and
`flm.ratelimit.tokens.<ip|key>` (local `Bucket`s, or `SharedTokenBucket`s).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mitmproxy import http

from flm_gateway.config.security_settings import RateLimit
from flm_gateway.config.state_settings import StateBackend
from flm_gateway.core.errors import error_response
from flm_gateway.core.netset import client_subject
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.background import BackgroundTask
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    AUTH_KEY,
    RATELIMIT_HEADERS,
    RATELIMIT_TOKENS_IP,
    RATELIMIT_TOKENS_KEY,
)
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.events import record
from flm_gateway.security.policies import client_ip, is_health_check, listener_name
from flm_gateway.security.ratelimit import Applied, Bucket, headers_for, merge_headers
from flm_gateway.security.ratelimit_scopes import RateLimitScope, key_rate_limit, rate_limit_scopes
from flm_gateway.state.store import KeyRecord

if TYPE_CHECKING:
    from flm_gateway.security.shared_buckets import SharedBuckets, SharedTokenBucket

MAX_BUCKETS = 200_000
SWEEP_INTERVAL = 60.0
Subject = Literal["ip", "key"]
BucketKey = tuple[str, str, str, str]
"""(scope, "ip"|"key", subject, "requests"|"tokens")."""
Limits = list[tuple[BucketKey, int, int | None, int]]
"""Per applicable bucket: its key, per minute, burst, and the limit its headers show."""


def _limits_any(limit: RateLimit) -> bool:
    return limit.requests_per_minute is not None or limit.tokens_per_minute is not None


@dataclass(frozen=True)
class _Limits:
    """One config's limits: per listener, the IPv6 grouping, the Redis target when shared."""

    scopes: Mapping[str, RateLimitScope]
    ipv6_prefix: int
    shared: tuple[str, str] | None


class RateLimiter:
    def __init__(self, subject: Subject, clock: Callable[[], float] = time.monotonic) -> None:
        self._subject = subject
        self.name = f"ratelimiter-{subject}"  # mitmproxy needs a unique name per instance
        self._clock = clock
        self._scopes: Mapping[str, RateLimitScope] = {}
        self._ipv6_prefix = 64
        self._buckets: dict[BucketKey, Bucket] = {}
        self._shared: SharedBuckets | None = None
        self._retired: list[SharedBuckets] = []
        self._background = BackgroundTask("flm-ratelimit-sweep", self._sweeper)

    def prepare(self, runtime: Runtime) -> _Limits:
        config = runtime.loaded.config
        scopes = rate_limit_scopes(config)
        if self._subject == "ip":
            # Listeners without a per-IP limit cost nothing per request (a key's limit
            # can come from the key itself, so the per-key scopes all stay).
            scopes = {
                name: scope for name, scope in scopes.items() if _limits_any(scope.settings.per_ip)
            }
        state = config.state
        shared = state.backend is StateBackend.REDIS
        target = (state.redis_url, state.redis_prefix) if shared else None
        return _Limits(scopes, config.security.ipv6_prefix, target)

    def commit(self, prepared: _Limits) -> None:
        self._scopes, self._ipv6_prefix = prepared.scopes, prepared.ipv6_prefix
        target = prepared.shared
        if target is not None and self._shared is not None and self._shared.target == target:
            return
        if self._shared is not None:
            self._retired.append(self._shared)  # closed in `done`
            self._shared = None
        if target is not None:
            # Imported here: a gateway on SQLite never loads redis.asyncio.
            from flm_gateway.security.shared_buckets import SharedBuckets

            self._shared = SharedBuckets(*target)

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

    def _limits(
        self, scope: RateLimitScope, ip: str, key: KeyRecord | None
    ) -> tuple[Limits, Limits]:
        """(request limits, token limits) that apply to this client."""
        subjects: list[tuple[str, str, RateLimit]] = []
        if self._subject == "ip":
            subjects.append(("ip", ip, scope.settings.per_ip))
        elif key is not None:
            subjects.append(("key", key.id, key_rate_limit(scope.settings.per_key, key)))
        requests: Limits = []
        tokens: Limits = []
        for kind, subject, limit in subjects:
            if limit.requests_per_minute is not None:
                rpm, burst = limit.requests_per_minute, limit.burst
                requests.append(((scope.name, kind, subject, "requests"), rpm, burst, burst or rpm))
            if limit.tokens_per_minute is not None:
                tpm = limit.tokens_per_minute
                tokens.append(((scope.name, kind, subject, "tokens"), tpm, None, tpm))
        return requests, tokens

    def _applied(self, limits: Limits, now: float) -> list[Applied]:
        return [
            Applied(self._bucket(key, per_minute, burst, now), shown)
            for key, per_minute, burst, shown in limits
        ]

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
        for shared in (*self._retired, *([self._shared] if self._shared else [])):
            await shared.close()
        self._retired = []

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep()

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response is not None:
            return None
        scope = self._scopes.get(listener_name(flow) or "")
        if scope is None or is_health_check(flow):
            return None
        key: KeyRecord | None = AUTH_KEY.get(flow)
        if self._subject == "key" and key is None:
            return None
        ip = client_subject(client_ip(flow), self._ipv6_prefix) if self._subject == "ip" else ""
        requests, tokens = self._limits(scope, ip, key)
        if not requests and not tokens:
            return None
        if self._shared is not None and self._shared.available():
            return self._check_shared(self._shared, flow, requests, tokens)
        self._check_local(flow, requests, tokens)
        return None

    def _check_local(
        self, flow: http.HTTPFlow, request_limits: Limits, token_limits: Limits
    ) -> None:
        now = self._clock()
        requests, tokens = self._applied(request_limits, now), self._applied(token_limits, now)
        # Check everything, then charge: no await in between (atomic on the loop).
        admitted = all(a.bucket.can_take(1.0, now) for a in requests) and all(
            a.bucket.admits(now) for a in tokens
        )
        if admitted:
            for applied in requests:
                applied.bucket.take(1.0)
        self._decide(flow, admitted, requests, tokens, [a.bucket for a in tokens])

    async def _check_shared(
        self,
        shared: SharedBuckets,
        flow: http.HTTPFlow,
        request_limits: Limits,
        token_limits: Limits,
    ) -> None:
        from flm_gateway.security.shared_buckets import (
            SharedSpec,
            SharedTokenBucket,
            SharedUnavailable,
        )

        def spec(limit: tuple[BucketKey, int, int | None, int], cost: float) -> SharedSpec:
            key, per_minute, burst, _ = limit
            return SharedSpec(shared.key(*key), float(burst or per_minute), per_minute / 60.0, cost)

        specs = [spec(x, 1.0) for x in request_limits] + [spec(x, 0.0) for x in token_limits]
        try:
            decision = await shared.take(specs)
        except SharedUnavailable:
            self._check_local(flow, request_limits, token_limits)
            return
        shown = [limit[3] for limit in (*request_limits, *token_limits)]
        applied = [Applied(b, limit) for b, limit in zip(decision.buckets, shown, strict=True)]
        count = len(request_limits)
        charged: list[Bucket | SharedTokenBucket] = [
            SharedTokenBucket(shared, spec, self._local_bucket(key, per_minute))
            for spec, (key, per_minute, _, _) in zip(specs[count:], token_limits, strict=True)
        ]
        self._decide(flow, decision.admitted, applied[:count], applied[count:], charged)

    def _local_bucket(self, key: BucketKey, per_minute: int) -> Callable[[], Bucket]:
        return lambda: self._bucket(key, per_minute, None, self._clock())

    def _decide(
        self,
        flow: http.HTTPFlow,
        admitted: bool,
        requests: list[Applied],
        tokens: list[Applied],
        charged: list[Bucket] | list[Bucket | SharedTokenBucket],
    ) -> None:
        """Headers, token buckets for `token_charge`, and the 429 unless `admitted`.

        When refused, no bucket was charged: the short ones are the request buckets
        below one request and the token buckets at zero or in debt.
        """
        tokens_key = RATELIMIT_TOKENS_IP if self._subject == "ip" else RATELIMIT_TOKENS_KEY
        tokens_key.set(flow, charged)
        headers = merge_headers(RATELIMIT_HEADERS.get(flow), headers_for(requests, tokens))
        RATELIMIT_HEADERS.set(flow, headers)
        if not admitted:
            short_requests = [a for a in requests if a.bucket.level < 1.0]
            short_tokens = [a for a in tokens if a.bucket.level <= 0.0]
            wait = max(
                [a.bucket.seconds_until(1.0) for a in short_requests]
                + [a.bucket.seconds_until(1e-9) for a in short_tokens],
                default=0.0,
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
        headers: dict[str, str] | None = RATELIMIT_HEADERS.get(flow)
        if headers and flow.response is not None:
            for name, value in headers.items():
                flow.response.headers[name] = value
