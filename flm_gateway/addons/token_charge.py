"""Charge a finished request's tokens to its rate limits and its key's usage counters.

Policy (on `response` and `error`, right after `token_accounting` wrote
`flm.usage`): the prompt plus completion tokens are taken from the token
buckets `rate_limit` admitted the request against (`flm.ratelimit.tokens.ip`,
`flm.ratelimit.tokens.key`), possibly into debt, so the client's next request
waits until they refill. Shared buckets (`state.backend: redis`) are charged in
Redis by one script, awaited before the response goes on (so the client's next
request sees the charge); while Redis is away, this process's buckets instead.
A request made with a key adds to that key's `usage:<id>:requests` and
`usage:<id>:tokens` counters in the state store (written in batches).

What counts as usage: a request that reached an engine (`flow_summary.
reached_engine`: routed and connected), whatever the engine answered. Nothing
the gateway refused or answered itself counts (401, 403, 404, 413, 429, 400
`max_tokens_exceeded`, `/v1/models`, 502/503/504 produced before an engine
was reached): those spent no engine time. Each flow is charged once. A flow
without `flm.usage` (accounting not available) adds a request but no tokens.
Never rejects: the answer has been produced already.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from mitmproxy import http

from flm_gateway.observability.flow_summary import reached_engine
from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    AUTH_KEY_ID,
    RATELIMIT_TOKENS_IP,
    RATELIMIT_TOKENS_KEY,
    TOKEN_CHARGE_DONE,
    USAGE,
)
from flm_gateway.security.ratelimit import Bucket
from flm_gateway.state.state_service import StateService

if TYPE_CHECKING:
    from flm_gateway.security.shared_buckets import SharedTokenBucket


def used_tokens(flow: http.HTTPFlow) -> int:
    usage = USAGE.get(flow)
    if not isinstance(usage, Mapping):
        return 0
    return max(0, int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0))


class TokenCharge(Unconfigured):
    def __init__(self, state: StateService, clock: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._clock = clock

    def _charge(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Charges the local buckets; an awaitable that charges the shared ones, if any."""
        if TOKEN_CHARGE_DONE.get(flow):
            return None
        TOKEN_CHARGE_DONE.set(flow, True)
        if not reached_engine(flow):
            return None
        used = used_tokens(flow)
        shared: list[SharedTokenBucket] = []
        now = self._clock()
        if used:
            for buckets in (RATELIMIT_TOKENS_IP, RATELIMIT_TOKENS_KEY):
                for bucket in buckets.get(flow) or ():
                    if isinstance(bucket, Bucket):
                        bucket.refill(now)
                        bucket.take(float(used))
                    else:
                        shared.append(bucket)
        key_id = AUTH_KEY_ID.get(flow)
        if key_id is not None:
            deltas = {f"usage:{key_id}:requests": 1}
            if used:
                deltas[f"usage:{key_id}:tokens"] = used
            self._state.count(deltas)
        if shared:
            from flm_gateway.security.shared_buckets import charge_tokens

            return charge_tokens(shared, float(used), now)
        return None

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._charge(flow)

    def error(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        return self._charge(flow)
