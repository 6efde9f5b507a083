"""aiohttp sessions that egress like the engine's traffic does.

The gateway's own HTTP calls to engines (health checks, model lists,
detection) go through sessions made by `make_session`. Their connector,
`DialerConnector`, opens every connection with the engine's current `Dialer`
and hands the host name to it unresolved: a socks5/tor profile's proxy
resolves it (no local DNS lookup, `.onion` works), a direct profile resolves
it locally. TLS keeps the real name for SNI and certificate checks; fail:
open behaves as for proxied requests (the dialer falls back). Sessions never
read proxy settings from the environment (`trust_env=False`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_exceptions import (
    ClientConnectorCertificateError,
    ClientConnectorError,
    ClientConnectorSSLError,
    cert_errors,
    ssl_errors,
)

from flm_gateway.egress.dialer import Dialer

DialerLookup = Callable[[], tuple[Dialer, float]]
"""Returns the dialer and connect timeout to use now (looked up per connection)."""


class _NamesStayUnresolved(AbstractResolver):
    """A resolver that resolves nothing: the proxy resolves the name."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": host, "port": port, "family": family, "proto": 0, "flags": 0}
        ]

    async def close(self) -> None:
        return None


class DialerConnector(aiohttp.TCPConnector):
    """A TCPConnector whose connections are opened by a `Dialer` (e.g. through SOCKS5)."""

    def __init__(self, lookup: DialerLookup, **kwargs: Any) -> None:
        super().__init__(resolver=_NamesStayUnresolved(), use_dns_cache=False, **kwargs)
        self._lookup = lookup

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: Any,
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,
        client_error: type[Exception] = ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, Any]:
        host, port = req.url.raw_host or "", req.port or 0
        dialer, connect_timeout = self._lookup()
        try:
            sock = await dialer.connect_socket(host, port, connect_timeout)
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc
        try:
            return await self._loop.create_connection(*args, **kwargs, sock=sock)
        except cert_errors as exc:
            sock.close()
            raise ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl_errors as exc:
            sock.close()
            raise ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            sock.close()
            raise client_error(req.connection_key, exc) from exc


def make_session(lookup: DialerLookup, **kwargs: Any) -> aiohttp.ClientSession:
    """A new session whose connections are opened by `lookup()`'s dialer; the caller closes it.

    Call inside the event loop. The dialer is looked up for every new connection, so a
    session made before a reload egresses the new way after it.
    """
    limit = kwargs.pop("limit", 8)
    connector = DialerConnector(lookup, limit=limit)
    return aiohttp.ClientSession(connector=connector, trust_env=False, **kwargs)
