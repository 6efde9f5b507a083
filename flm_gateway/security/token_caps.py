"""The max_tokens cap of a request: the smallest of its listener's, its route's and its key's.

Policy (`security.request_limits` of the listener, `max_tokens_per_route` keyed by a
route's `model` value, a key's own `limits.max_tokens`): the cap is the smallest of
those that are set; none set, no cap. It bounds chat and completions requests only
(`CAPPED_KINDS`). The `request_limits` addon enforces it; the effective-policy report
(`flm-gateway validate --effective`) prints it, both through `token_cap`.
"""

from __future__ import annotations

from flm_gateway.config.route_settings import RouteConfig
from flm_gateway.config.security_settings import RequestLimitSettings
from flm_gateway.state.store import KeyRecord

CAPPED_KINDS = frozenset({"chat", "completions"})


def token_cap(
    limits: RequestLimitSettings, route: RouteConfig | None, key: KeyRecord | None
) -> int | None:
    """The cap for a request on a listener with `limits`, matching `route` (None: routed by
    discovery), made with `key` (None: no key); None when nothing caps it."""
    caps = [limits.max_tokens]
    if route is not None:
        caps.append(limits.max_tokens_per_route.get(route.model))
    if key is not None:
        caps.append(key.limits.max_tokens)
    present = [cap for cap in caps if cap is not None]
    return min(present) if present else None
