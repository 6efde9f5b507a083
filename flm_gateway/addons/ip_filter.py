"""Refuse clients by address: the allow list, the block lists, and a stale state store.

Policy (on `requestheaders`, the first decision for every flow, health checks
included, since a blocked client should learn nothing):
1. While the state store is unusable (`StateService.usable`), every request but
   the health endpoints gets 503 `security_state_unavailable` with Retry-After:
   the block list and keys cannot be trusted, so nothing is decided on them.
2. A client (`flm.client_ip`) outside a non-empty `security.ip.allow` of its
   listener gets 403 `ip_not_allowed`.
3. A client in the listener's `security.ip.block` or in an active entry of the
   stored block list (CLI, auto-block) gets 403 `ip_blocked`.
An address that cannot be parsed is refused (fail closed). Denials are not
audited one by one (a blocked client must not be able to flood the audit
log); they are counted (`blocked_requests` counter). Reads `flm.client_ip`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from mitmproxy import http

from flm_gateway.core.errors import error_response
from flm_gateway.core.netset import NetworkMap, parse_ip
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import IP_FILTER_DENIED
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.policies import client_ip, is_health_check, listener_name, per_listener
from flm_gateway.state.state_service import StateService

RETRY_AFTER_UNAVAILABLE = "5"


_Lists = tuple[Mapping[str, NetworkMap[bool] | None], Mapping[str, NetworkMap[bool]]]
"""Per listener: the allow list (None: everyone) and the block list."""


class IpFilter:
    def __init__(self, state: StateService) -> None:
        self._state = state
        self._allow: Mapping[str, NetworkMap[bool] | None] = {}
        self._block: Mapping[str, NetworkMap[bool]] = {}

    def prepare(self, runtime: Runtime) -> _Lists:
        allow: dict[str, NetworkMap[bool] | None] = {}
        block: dict[str, NetworkMap[bool]] = {}
        for name, security in per_listener(runtime.loaded.config).items():
            allow[name] = (
                NetworkMap((c, True) for c in security.ip.allow) if security.ip.allow else None
            )
            block[name] = NetworkMap((c, True) for c in security.ip.block)
        return allow, block

    def commit(self, prepared: _Lists) -> None:
        self._allow, self._block = prepared

    def is_blocked(self, address_text: str, listener: str | None, now: float) -> bool:
        """Whether `address_text` is refused by the listener's or the stored block list."""
        address = parse_ip(address_text)
        if address is None:
            return True
        configured = self._block.get(listener or "")
        if configured is not None and address in configured:
            return True
        return any(
            record.active_at(now) for _, record in self._state.view.blocks.lookup_all(address)
        )

    @fail_closed(503)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        if not self._state.usable and not is_health_check(flow):
            flow.response = error_response(
                503,
                "The gateway's security state is unavailable; retry shortly.",
                code="security_state_unavailable",
                headers={"retry-after": RETRY_AFTER_UNAVAILABLE},
            )
            return
        listener = listener_name(flow)
        address = parse_ip(client_ip(flow))
        allow = self._allow.get(listener or "")
        if address is None or (allow is not None and address not in allow):
            IP_FILTER_DENIED.set(flow, "not_allowed")
            flow.response = error_response(
                403, "Your address is not allowed to use this gateway.", code="ip_not_allowed"
            )
            return
        if self.is_blocked(str(address), listener, time.time()):
            IP_FILTER_DENIED.set(flow, "blocked")
            self._state.count({"blocked_requests": 1})
            flow.response = error_response(403, "Your address is blocked.", code="ip_blocked")
