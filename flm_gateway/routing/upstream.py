"""Sending a flow to an engine: reachability probe, target rewrite and credential swap.

Why a probe: mitmproxy answers a failed upstream connect itself, after our hooks
ran, so a dead engine could neither be replaced by a fallback nor reported in
OpenAI's error shape. Before forwarding, `probe` therefore checks that the
engine accepts a TCP connection, unless the flow will reuse an open connection
to it or a connect to it succeeded within `PROBE_FRESHNESS` seconds. The probe
dials through the engine's own dialer (its egress), never around it. The small
window between a successful probe and mitmproxy's own connect is covered by
`mitm_errors`, which renders mitmproxy's errors in OpenAI's shape too. A probe
that fails at a proxied egress (SOCKS5/Tor) records the `EgressFailure` in
`flm.egress.failures`, so the client learns which egress
failed and why; its bound is the egress profile's connect timeout.

Host: the engine's own, whatever the client sent. Credentials: the client's own
(Authorization, X-Api-Key, Cookie, Proxy-Authorization) are removed; the engine's
`api_key`, if any, is sent as `Authorization: Bearer`.
"""

from __future__ import annotations

import asyncio
import time
from enum import StrEnum

from mitmproxy import http
from mitmproxy.net.http import url

from flm_gateway.egress.failure import EgressError, Reason
from flm_gateway.engines.directory import EngineState
from flm_gateway.proxy.flow_meta import EGRESS_FAILURES, ROUTE_ENGINE

PROBE_FRESHNESS = 1.0
DIAL_GRACE = 1.0
CLIENT_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "cookie", "proxy-authorization")
_CREDENTIAL_FIELD_NAMES = frozenset(name.encode() for name in CLIENT_CREDENTIAL_HEADERS)


class ProbeResult(StrEnum):
    OK = "ok"
    REFUSED = "refused"
    TIMEOUT = "timeout"


def reuses_connection(flow: http.HTTPFlow, engine: EngineState) -> bool:
    """True when the flow's current server connection is open and already goes to `engine`
    (directly or through its egress bridge: the egress addon replaces a connection whose
    route no longer matches the engine's profile, so reuse here is reuse there)."""
    server = flow.server_conn
    return bool(server.connected and server.address == (engine.address.host, engine.address.port))


async def probe(flow: http.HTTPFlow, engine: EngineState) -> ProbeResult:
    """Whether `engine` accepts connections now (see the module docstring for when it dials)."""
    if reuses_connection(flow, engine):
        return ProbeResult.OK
    if time.monotonic() - engine.last_connect_ok < PROBE_FRESHNESS:
        return ProbeResult.OK
    timeout = engine.connect_timeout or engine.config.timeouts.connect
    try:
        # An egress dialer bounds itself by `timeout` and says why it failed; the outer
        # bound (with a grace) only guards dialers that do not.
        _, writer = await asyncio.wait_for(
            engine.dial(engine.address.host, engine.address.port), timeout + DIAL_GRACE
        )
    except TimeoutError:
        engine.mark_down(f"connect timed out after {timeout:g}s")
        return ProbeResult.TIMEOUT
    except EgressError as exc:
        engine.mark_down(exc.failure.log_message())
        if exc.failure.proxied:
            EGRESS_FAILURES.setdefault(flow, {})[engine.name] = exc.failure
        if exc.failure.reason is Reason.TIMEOUT:
            return ProbeResult.TIMEOUT
        return ProbeResult.REFUSED
    except OSError as exc:
        engine.mark_down(f"connect failed: {exc.strerror or exc.__class__.__name__}")
        return ProbeResult.REFUSED
    writer.close()
    engine.mark_connect_ok()
    return ProbeResult.OK


def strip_client_credentials(request: http.Request) -> None:
    """Remove every client credential header, in one pass over the raw header fields
    (four `headers.pop` calls cost ~9 µs per request, this ~1 µs)."""
    fields = request.headers.fields
    if any(name.lower() in _CREDENTIAL_FIELD_NAMES for name, _ in fields):
        request.headers.fields = tuple(
            (name, value) for name, value in fields if name.lower() not in _CREDENTIAL_FIELD_NAMES
        )


def engine_authority(scheme: str, host: str, port: int) -> str:
    """The Host an engine expects: its port only when not the scheme's default, an IPv6
    address in brackets (mitmproxy's `url.hostport` leaves them out)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if url.default_port(scheme) == port else f"{shown}:{port}"


def point_at(flow: http.HTTPFlow, engine: EngineState, path: str) -> None:
    """Send `flow` to `engine` at `path` (below the engine's base URL) with the engine's key."""
    request = flow.request
    address = engine.address
    request.scheme = address.scheme
    request.data.host = address.host
    request.data.port = address.port
    # mitmproxy keeps the client's Host (`keep_host_header`, which `host_check` reads): the
    # engine gets its own, exactly once, also when the client sent none (HTTP/1.0), so its
    # own DNS-rebinding defence sees the name it expects.
    authority = engine_authority(address.scheme, address.host, address.port)
    request.host_header = authority
    if request.data.authority:  # an absolute-form target names the engine too
        request.authority = authority
    request.path = address.base_path + path
    strip_client_credentials(request)
    if engine.config.api_key:
        request.headers["authorization"] = f"Bearer {engine.config.api_key}"
    ROUTE_ENGINE.set(flow, engine.name)
