"""Cap open connections, per client and in all, and the time to a first request.

Policy, on mitmproxy's connection hooks, before any request is parsed:
- `client_connected`: a new connection from a client that already holds
  `server.limits.max_connections_per_client` open connections, or while the
  gateway holds `server.limits.max_connections` in all, is closed at once without
  an answer (there is no request yet to answer; nginx's `limit_conn` and
  `worker_connections` do the same at this stage). A client is its peer address;
  an IPv6 peer is its /64, the block one subscriber usually holds (an attacker can
  pick any address inside it). Peers listed as trusted proxies in
  `security.ip.trusted_proxies` (globally or on any listener) are exempt from the
  per-client cap, since every client behind them shares their address; they still
  count toward the total. `max_connections` unset means half of the open-file
  limit (see `flm_gateway.state.process.raise_fd_limit`) less `FD_RESERVE`, since a
  client connection may need an engine connection too.
- a connection must deliver its first complete request head (its TLS handshake
  included) within `server.limits.header_timeout` of being accepted, plus
  `FIRST_REQUEST_GRACE`, else it is closed without an answer; the first
  `requestheaders` of the connection ends that wait. The grace lets the HTTP layer
  (`mitm_http1`), which times every head from its first byte, answer a head that
  started but stalled with 408 first; this timer catches connections that never
  reach the HTTP layer: no byte at all, or a TLS handshake that stalls.

Each refusal is counted (`flm_protocol_refusals`) and logged at most once a
minute per reason. Reads and writes no `flow.metadata`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, ctx, http

from flm_gateway.core.netset import IPAddress, NetworkMap, parse_ip
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.policies import per_listener

log = logging.getLogger("flm_gateway.security")

FD_RESERVE = 64
"""File descriptors kept for engines, the state store, logs and the admin listener."""
LOG_EVERY = 60.0
FIRST_REQUEST_GRACE = 1.0
"""Seconds past header_timeout before a connection without a first request is closed."""


def default_max_connections() -> int:
    """Half of the open-file limit less `FD_RESERVE` (at least 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, (soft - FD_RESERVE) // 2)


def client_key(peername: tuple[str, int] | None) -> tuple[str, IPAddress | None]:
    """(the key a client's connections are counted under, its address)."""
    peer = parse_ip(peername[0]) if peername else None
    if peer is None:
        return "", None
    if peer.version == 6:
        return str(ipaddress.IPv6Network((int(peer) >> 64 << 64, 64))), peer
    return str(peer), peer


@dataclass(frozen=True)
class _Caps:
    per_client: int  # 0: no per-client cap
    total: int
    exempt: NetworkMap[bool]
    first_request: float


def _mitmproxy_handlers() -> Mapping[str, Any]:
    """mitmproxy's live connection handlers by client id (its proxyserver addon's)."""
    handlers: Mapping[str, Any] = ctx.master.addons.get("proxyserver").connections
    return handlers


class ConnectionLimits:
    def __init__(
        self,
        metrics: GatewayMetrics | None = None,
        handlers: Callable[[], Mapping[str, Any]] = _mitmproxy_handlers,
    ) -> None:
        self._metrics = metrics
        self._handlers = handlers
        self._caps = _Caps(0, default_max_connections(), NetworkMap(), 20.0)
        self._open: Counter[str] = Counter()
        self._total = 0
        self._refused: set[str] = set()  # clients refused: counted down on disconnect
        self._waiting: dict[str, asyncio.TimerHandle] = {}  # client id -> first-request timer
        self._logged: dict[str, float] = {}

    def prepare(self, runtime: Runtime) -> _Caps:
        config = runtime.loaded.config
        limits = config.server.limits
        exempt: NetworkMap[bool] = NetworkMap()
        for security in per_listener(config).values():
            for cidr in security.ip.trusted_proxies:
                exempt.add(cidr, True)
        return _Caps(
            limits.max_connections_per_client,
            limits.max_connections or default_max_connections(),
            exempt,
            limits.header_timeout + FIRST_REQUEST_GRACE,
        )

    def commit(self, prepared: _Caps) -> None:
        self._caps = prepared

    @property
    def open_connections(self) -> int:
        return self._total

    def client_connected(self, client: connection.Client) -> None:
        caps = self._caps
        address, peer = client_key(client.peername)
        reason = None
        if self._total >= caps.total:
            reason = "connection limit"
        elif (
            caps.per_client
            and self._open[address] >= caps.per_client
            and (peer is None or peer not in caps.exempt)
        ):
            reason = "per-client connection limit"
        if reason is not None:
            client.error = reason  # mitmproxy closes the connection without reading from it
            self._refused.add(client.id)
            self._report(reason, address)
            return
        self._open[address] += 1
        self._total += 1
        loop = asyncio.get_running_loop()
        self._waiting[client.id] = loop.call_later(caps.first_request, self._expire, client.id)

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        timer = self._waiting.pop(flow.client_conn.id, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, client_id: str) -> None:
        """No first request head in time: close the connection (mitmproxy's handler)."""
        self._waiting.pop(client_id, None)
        handler = self._handlers().get(client_id)
        if handler is None:
            return
        handler.close_connection(handler.client)
        self._report("no request in time", "")

    def client_disconnected(self, client: connection.Client) -> None:
        timer = self._waiting.pop(client.id, None)
        if timer is not None:
            timer.cancel()
        if client.id in self._refused:
            self._refused.discard(client.id)
            return
        address, _ = client_key(client.peername)
        self._total -= 1
        left = self._open[address] - 1
        if left > 0:
            self._open[address] = left
        else:
            del self._open[address]

    def _report(self, reason: str, address: str) -> None:
        if self._metrics is not None:
            self._metrics.protocol_refusals.labels("closed", reason).inc()
        now = time.monotonic()
        if now - self._logged.get(reason, -LOG_EVERY) >= LOG_EVERY:
            self._logged[reason] = now
            log.warning(
                "closing connections: %s%s (this message repeats at most once a minute)",
                reason,
                f" (first from {address})" if address else "",
            )
