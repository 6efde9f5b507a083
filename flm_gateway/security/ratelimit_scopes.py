"""Which rate limits apply where: the scope of each listener's buckets, and a key's own limits.

Policy (`security.rate_limits`, `security.keys[].limits`):
- Listeners without their own `security.rate_limits` share the global section and its
  buckets: one scope, named `*`. A listener with its own section is a scope of its own,
  named after it, with its own buckets.
- `per_ip` applies to every client of the scope; `per_key` to requests made with a key.
- A key's own `requests_per_minute` or `tokens_per_minute` replaces that part of
  `per_key` (the other part stays); its own `requests_per_minute` also drops the scope's
  `burst` (a key's rate comes with no burst: a minute's worth).
The `rate_limit` addon enforces them; `flm-gateway validate --effective` prints them,
both through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.security_settings import RateLimit, RateLimitSettings
from flm_gateway.state.store import KeyRecord

SHARED_SCOPE = "*"


@dataclass(frozen=True)
class RateLimitScope:
    """A set of buckets: `name` (`*` or a listener's) and the limits it counts against."""

    name: str
    settings: RateLimitSettings


def rate_limit_scopes(config: GatewayConfig) -> Mapping[str, RateLimitScope]:
    """Listener name -> the scope its clients are counted in."""
    scopes = {}
    for listener in config.listeners:
        own = listener.security.rate_limits if listener.security is not None else None
        settings = own or config.security.rate_limits
        scopes[listener.name] = RateLimitScope(
            listener.name if own is not None else SHARED_SCOPE, settings
        )
    return scopes


def key_rate_limit(base: RateLimit, key: KeyRecord) -> RateLimit:
    """The per-key limit for `key`: the scope's `per_key` (`base`) with the key's overrides."""
    limits = key.limits
    if limits.requests_per_minute is None and limits.tokens_per_minute is None:
        return base
    return RateLimit(
        requests_per_minute=limits.requests_per_minute or base.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute or base.tokens_per_minute,
        burst=base.burst if limits.requests_per_minute is None else None,
    )
