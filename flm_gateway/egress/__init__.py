"""Egress: how the gateway reaches engines (direct, SOCKS5, Tor), one concept per module.

- `failure`: why an egress failed (`EgressFailure`, `Reason`, `EgressError`) and its client form.
- `socks5`: the SOCKS5 client handshake (remote DNS only).
- `tor`: Tor ControlPort bootstrap probe.
- `dialer`: the `Dialer` protocol and its direct, SOCKS and fail-open implementations.
- `profiles`: config -> frozen runtime state (`EgressPlan`).
- `sessions`: HTTP sessions (`httpio.client`) per profile.
- `bridge`: the HTTP CONNECT -> SOCKS bridge for mitmproxy's upstream connections.
- `service`: `EgressService`, the one object the gateway asks.

The addon that applies it to flows is `flm_gateway.addons.egress_dispatch`.
"""

from flm_gateway.egress.dialer import Dialer, DirectDialer, FallbackDialer, SocksDialer
from flm_gateway.egress.egress_service import EgressService
from flm_gateway.egress.failure import EgressError, EgressFailure, Reason, failure_from_message

__all__ = [
    "Dialer",
    "DirectDialer",
    "EgressError",
    "EgressFailure",
    "EgressService",
    "FallbackDialer",
    "Reason",
    "SocksDialer",
    "failure_from_message",
]
