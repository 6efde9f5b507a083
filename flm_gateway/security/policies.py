"""Small lookups every security addon shares: the security that applies on a listener,
and which flows are health checks."""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.security_settings import SecurityConfig, effective_security
from flm_gateway.proxy.api_kind import HEALTH_PATHS
from flm_gateway.proxy.flow_meta import CLIENT_IP, LISTENER


def per_listener(config: GatewayConfig) -> Mapping[str, SecurityConfig]:
    """Listener name -> the security that applies there (global sections, replaced by its own)."""
    return {
        listener.name: effective_security(config.security, listener.security)
        for listener in config.listeners
    }


def is_health_check(flow: http.HTTPFlow) -> bool:
    """The exact health paths the `health_endpoints` addon answers (no other spelling is exempt).

    Before `canonical_target` this is the client's own spelling; from there on, the
    canonical path (so `/%68ealthz` is exempt from auth, as `health` answers it)."""
    return flow.request.path in HEALTH_PATHS


def listener_name(flow: http.HTTPFlow) -> str | None:
    listener = LISTENER.get(flow)
    return None if listener is None else str(listener.name)


def client_ip(flow: http.HTTPFlow) -> str:
    """The client address after trusted-proxy handling (`client_ip` addon)."""
    return str(CLIENT_IP.get(flow) or flow.client_conn.peername[0])
