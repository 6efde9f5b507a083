"""HTTP sessions that egress like the engine's traffic does.

The gateway's own HTTP calls to engines (health checks, model lists, fallback
requests, detection) go through sessions made by `make_session`: every
connection is opened by the engine's current `Dialer`, which gets the host name
unresolved, so a socks5/tor profile's proxy resolves it (no local DNS lookup,
`.onion` works) and a direct profile resolves it locally. TLS keeps the real
name for SNI and certificate checks; fail: open behaves as for proxied requests
(the dialer falls back).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from flm_gateway.config.egress_settings import DEFAULT_CONNECT_TIMEOUT
from flm_gateway.egress.dialer import Dialer, DirectDialer
from flm_gateway.httpio.http_client import HttpSession

DialerLookup = Callable[[], tuple[Dialer, float]]
"""Returns the dialer and connect timeout to use now (looked up per connection)."""


def make_session(lookup: DialerLookup, **kwargs: Any) -> HttpSession:
    """A new session whose connections are opened by `lookup()`'s dialer; the caller closes it.

    The dialer is looked up for every new connection, so a session made before a
    reload egresses the new way after it. `kwargs` go to `HttpSession`.
    """

    async def connect(host: str, port: int) -> socket.socket:
        dialer, timeout = lookup()
        return await dialer.connect_socket(host, port, timeout)

    return HttpSession(connect, **kwargs)


def direct_session(**kwargs: Any) -> HttpSession:
    """A session that connects from this host, for calls that use no egress profile."""
    dialer = DirectDialer()
    return make_session(lambda: (dialer, DEFAULT_CONNECT_TIMEOUT), **kwargs)
