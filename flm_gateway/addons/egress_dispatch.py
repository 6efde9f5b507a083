"""Egress: send every routed flow out the way its engine's egress profile says.

Runs after `routing`, in `requestheaders` and `request` (streamed uploads are
routed in the first, buffered requests in the second). Reads
`flm.route.engine`; writes `flm.egress.profile` (the
profile's name) and, when the connection through the egress failed,
`flm.egress.failure` (an `EgressFailure`).

- Engines of socks5/tor profiles: `flow.server_conn.via` is set to the
  profile's CONNECT bridge; engines of direct profiles get `via = None`.
  `flow.server_conn` is shared by every flow of one client connection, so a
  server connection already used is replaced rather than changed.
- Fail closed (the default of socks5/tor): `server_connect` refuses every
  direct dial to the address of an engine whose profile is a fail-closed
  proxy, whatever decided to dial it (502, reason `direct_refused`). If the
  bridge is not running the flow is answered 503 `egress_unavailable`; a
  Tor profile with a ControlPort answers 503 `tor_not_bootstrapped` at once
  while Tor is not ready.
- Fail open: the bridge's dialer falls back to a direct connection and logs a
  warning and an audit record; without a bridge the flow goes direct.
- Failures inside the bridge reach the client through mitmproxy's error
  message; `flm_gateway.egress.failure_from_message` turns it into the OpenAI
  error (status 502/503/504, code `egress_<reason>`).
- `http_connect_upstream` adds the bridge's Proxy-Authorization token to
  CONNECTs addressed to the bridge.

On `flm_failover` (a retry on another engine) the next engine's profile is applied
the same way.

A hook that raises answers the flow 502 (`fail_closed`) or refuses the dial:
never direct.
"""

from __future__ import annotations

import logging

from mitmproxy import connection, http
from mitmproxy.net.server_spec import ServerSpec
from mitmproxy.proxy import server_hooks

from flm_gateway.egress.dialer import SocksDialer, format_target
from flm_gateway.egress.egress_service import EgressService
from flm_gateway.egress.failure import EgressFailure, Reason, failure_from_message
from flm_gateway.egress.profiles import EgressPlan, RuntimeProfile
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    EGRESS_FAILURE,
    EGRESS_PROFILE,
    FAILOVER_RESEND,
    ROUTE_ENGINE,
)
from flm_gateway.proxy.runtime import Runtime

log = logging.getLogger(__name__)


class Egress:
    """Applies egress profiles to flows and keeps fail-closed engines off direct connections."""

    def __init__(self, service: EgressService | None = None) -> None:
        self.service = service if service is not None else EgressService()

    def prepare(self, runtime: Runtime) -> EgressPlan:
        return self.service.prepare(runtime.loaded)

    def commit(self, prepared: EgressPlan) -> None:
        self.service.commit(prepared)

    async def running(self) -> None:
        await self.service.start()

    async def done(self) -> None:
        await self.service.stop()

    @fail_closed(502)
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        await self._apply(flow)

    @fail_closed(502)
    async def request(self, flow: http.HTTPFlow) -> None:
        await self._apply(flow)

    @fail_closed(502)
    async def flm_failover(self, flow: http.HTTPFlow) -> None:
        if FAILOVER_RESEND.get(flow):
            await self._apply(flow)

    async def _apply(self, flow: http.HTTPFlow) -> None:
        engine = ROUTE_ENGINE.get(flow)
        if engine is None or flow.response is not None or flow.error is not None:
            return
        profile = self.service.profile(str(engine))
        EGRESS_PROFILE.set(flow, profile.name)
        via: ServerSpec | None = None
        if profile.proxied:
            if (refusal := await self._tor_refusal(profile, flow)) is not None:
                flow.response = refusal.response()
                return
            bridge = self.service.bridge_address(profile.name)
            if bridge is not None:
                via = ("http", bridge)
            elif not profile.fail_open:
                failure = EgressFailure(profile.name, profile.mode, Reason.EGRESS_UNAVAILABLE)
                log.warning("%s: the CONNECT bridge is not running", failure.log_message())
                flow.response = failure.response()
                return
            else:
                log.warning(
                    "egress %r (%s): the CONNECT bridge is not running; "
                    "connecting directly (fail: open)",
                    profile.name,
                    profile.mode,
                )
        _set_via(flow, via)

    async def _tor_refusal(
        self, profile: RuntimeProfile, flow: http.HTTPFlow
    ) -> EgressFailure | None:
        """A tor_not_bootstrapped failure when a fail-closed Tor profile's ControlPort says so."""
        dialer = profile.dialer
        if profile.fail_open or not isinstance(dialer, SocksDialer) or dialer.tor_control is None:
            return None
        status = await dialer.tor_control.status()
        if status is None or status.ready:
            return None
        return EgressFailure(
            profile.name,
            profile.mode,
            Reason.TOR_NOT_BOOTSTRAPPED,
            f"bootstrapped {status.progress}%",
            format_target(flow.request.host, flow.request.port),
        )

    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        if flow.server_conn.address in self.service.bridge.addresses:
            flow.request.headers["Proxy-Authorization"] = self.service.proxy_authorization

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        try:
            self._check_dial(data.server)
        except Exception:
            log.exception("egress: cannot check a server connection; refusing it")
            data.server.error = "egress policy check failed"

    def _check_dial(self, server: connection.Server) -> None:
        if server.error or server.address is None:
            return
        host, port = server.address[0], server.address[1]
        if server.via is None and (host, port) in self.service.bridge.addresses:
            return
        key = (host.lower().rstrip("."), port)
        profile_name = self.service.plan.fail_closed_targets.get(key)
        if profile_name is None:
            return
        profile = self.service.plan.profiles[profile_name]
        failure = EgressFailure(
            profile.name,
            profile.mode,
            Reason.DIRECT_REFUSED,
            "a direct connection was attempted",
            format_target(host, port),
        )
        log.error("%s", failure.log_message())
        server.error = failure.marker()

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.error is None or not EGRESS_PROFILE.is_set(flow):
            return
        failure = failure_from_message(flow.error.msg)
        if failure is not None:
            EGRESS_FAILURE.set(flow, failure)


def _set_via(flow: http.HTTPFlow, via: ServerSpec | None) -> None:
    """Point the flow's server connection at `via`, replacing a used shared connection."""
    if flow.server_conn.via == via:
        return
    if flow.server_conn.timestamp_start is not None:
        # Shared by the client connection's earlier flows and maybe open: a fresh one.
        flow.server_conn = connection.Server(address=flow.server_conn.address)
    flow.server_conn.via = via
