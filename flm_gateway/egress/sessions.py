"""aiohttp sessions that egress like the engine's traffic does.

The gateway's own HTTP calls to engines (health checks, model lists,
detection) use `SessionPool.get(profile)`: one `aiohttp.ClientSession` per
profile. A proxied profile's session dials with the profile's `Dialer`
through `DialerConnector`, whose resolver hands the name through unresolved,
so the SOCKS server or Tor resolves it: no local DNS lookup, `.onion` works,
TLS keeps the real name for SNI and certificate checks. fail: open behaves
as for proxied requests (the dialer falls back). Sessions never read proxy
settings from the environment (`trust_env=False`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
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
from flm_gateway.egress.profiles import RuntimeProfile

RETIRE_GRACE = 30.0
"""Seconds an old session may finish its requests after a reload replaced its profile."""


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

    def __init__(self, dialer: Dialer, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(resolver=_NamesStayUnresolved(), use_dns_cache=False, **kwargs)
        self._dialer = dialer
        self._connect_timeout = connect_timeout

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: Any,
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
        client_error: type[Exception] = ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, Any]:
        host, port = req.url.raw_host or "", req.port or 0
        try:
            sock = await self._dialer.connect_socket(host, port, self._connect_timeout)
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


def make_session(profile: RuntimeProfile, **kwargs: Any) -> aiohttp.ClientSession:
    """A new session egressing through `profile`; call inside the event loop."""
    connector: aiohttp.BaseConnector
    if profile.proxied and profile.connect_timeout is not None:
        connector = DialerConnector(profile.dialer, profile.connect_timeout)
    else:
        connector = aiohttp.TCPConnector()
    return aiohttp.ClientSession(connector=connector, trust_env=False, **kwargs)


class SessionPool:
    """One session per profile, replaced when a reload changes the profile."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[RuntimeProfile, aiohttp.ClientSession]] = {}
        self._retired: set[aiohttp.ClientSession] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, profile: RuntimeProfile) -> aiohttp.ClientSession:
        entry = self._sessions.get(profile.name)
        if entry is not None and entry[0] is profile and not entry[1].closed:
            return entry[1]
        if entry is not None:
            self._retire(entry[1])
        session = make_session(profile)
        self._sessions[profile.name] = (profile, session)
        return session

    def keep_only(self, profiles: dict[str, RuntimeProfile]) -> None:
        """Retire sessions whose profile is gone or changed."""
        for name, (profile, session) in list(self._sessions.items()):
            if profiles.get(name) is not profile:
                del self._sessions[name]
                self._retire(session)

    def _retire(self, session: aiohttp.ClientSession) -> None:
        async def close_later() -> None:
            await asyncio.sleep(RETIRE_GRACE)
            self._retired.discard(session)
            await session.close()

        try:
            task = asyncio.get_running_loop().create_task(close_later())
        except RuntimeError:  # no loop: nothing can be in flight
            return
        self._retired.add(session)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        sessions = [session for _, session in self._sessions.values()] + list(self._retired)
        self._sessions.clear()
        self._retired.clear()
        for task in list(self._closing):
            task.cancel()
        for session in sessions:
            with contextlib.suppress(Exception):
                await session.close()
