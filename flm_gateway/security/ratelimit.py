"""Token buckets for rate limits: pure, synchronous, clock passed in.

Requests: a bucket of `capacity` (the burst) refilling at `rate` per second; a
request takes one token or is refused. Tokens (LLM tokens): the bucket admits a
request while its level is above zero and is charged the real usage when the
response ends, so it may go into debt that must refill before the next request.
Checks and charges are plain method calls with no awaits: on one event loop,
check-and-take is atomic, which is what makes limits exact under concurrency.
Also the OpenAI `x-ratelimit-*` headers of the applicable buckets (local ones,
or snapshots of the shared ones in Redis, `shared_buckets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Bucket:
    capacity: float
    rate: float
    """Refill per second."""
    level: float
    updated: float

    @classmethod
    def per_minute(cls, per_minute: int, burst: int | None, now: float) -> Bucket:
        capacity = float(burst or per_minute)
        return cls(capacity, per_minute / 60.0, capacity, now)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def can_take(self, amount: float, now: float) -> bool:
        self.refill(now)
        return self.level >= amount

    def admits(self, now: float) -> bool:
        """For debt buckets: anything left at all."""
        self.refill(now)
        return self.level > 0

    def take(self, amount: float) -> None:
        self.level -= amount

    def remaining(self) -> int:
        return max(0, math.floor(self.level))

    def seconds_until(self, level: float) -> float:
        """Time until the bucket holds `level` (0 if it does)."""
        return max(0.0, (level - self.level) / self.rate) if self.rate > 0 else math.inf

    def reset_seconds(self) -> float:
        """Time until the bucket is full again (OpenAI's x-ratelimit-reset-*)."""
        return self.seconds_until(self.capacity)

    def full(self, now: float) -> bool:
        self.refill(now)
        return self.level >= self.capacity

    def resize(self, per_minute: int, burst: int | None) -> None:
        """Apply a changed limit (a reload) without forgetting usage."""
        capacity = float(burst or per_minute)
        self.level = min(self.level, capacity)
        self.capacity, self.rate = capacity, per_minute / 60.0


def format_reset(seconds: float) -> str:
    """OpenAI's duration format for x-ratelimit-reset-*: `1s`, `6m0s`, `20ms`, `1h2m3s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass
class Applied:
    """A bucket that applies to a request, and the limit its headers show."""

    bucket: Bucket
    limit: int


def _tightest(applied: list[Applied]) -> Applied | None:
    return min(
        applied, key=lambda a: (a.bucket.remaining(), -a.bucket.reset_seconds()), default=None
    )


def headers_for(requests: list[Applied], tokens: list[Applied]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for suffix, applied in (("requests", _tightest(requests)), ("tokens", _tightest(tokens))):
        if applied is None:
            continue
        headers[f"x-ratelimit-limit-{suffix}"] = str(applied.limit)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(applied.bucket.remaining())
        headers[f"x-ratelimit-reset-{suffix}"] = format_reset(applied.bucket.reset_seconds())
    return headers


def merge_headers(old: dict[str, str] | None, new: dict[str, str]) -> dict[str, str]:
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
