"""Dialers: the one way the gateway opens a TCP connection to an engine.

`Dialer` is the protocol: `open_connection(host, port, timeout)` returns
asyncio streams, `connect_socket` a connected non-blocking socket (for
the HTTP sessions and the CONNECT bridge). Every failure raises `EgressError` (a
`ConnectionError`) whose `failure` names the profile and the `Reason`.

- `DirectDialer` resolves the name locally and connects. It refuses `.onion`
  names, which only Tor can reach.
- `SocksDialer` (socks5 and tor profiles) connects to the proxy and sends the
  target name for the proxy to resolve: no name is ever resolved locally.
  For Tor with a ControlPort it fails at once while Tor has not bootstrapped.
- `FallbackDialer` is a proxied profile with `fail: open`: on any failure of
  the proxied path it logs a warning and an audit record (logger
  `flm_gateway.audit`) and connects directly; `.onion` targets never fall back.

Everything happens within `timeout` seconds (the fallback gets its own
`timeout`). Credentials never appear in logs, reprs or messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Protocol

from flm_gateway.egress.failure import EgressError, EgressFailure, Reason
from flm_gateway.egress.socks5 import Socks5Error, handshake
from flm_gateway.egress.tor import TorControl

log = logging.getLogger(__name__)
audit_log = logging.getLogger("flm_gateway.audit")

LOG_EVERY = 30.0
"""Seconds between repeated warnings for the same failure of a SOCKS dialer."""

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Dialer(Protocol):
    """Opens connections to engines the way one egress profile says."""

    profile: str
    mode: str

    async def connect_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """A connected, non-blocking socket to host:port; raises EgressError."""
        ...

    async def open_connection(self, host: str, port: int, timeout: float) -> Streams:
        """Streams to host:port; raises EgressError."""
        ...


def is_onion(host: str) -> bool:
    return host.lower().rstrip(".").endswith(".onion")


def format_target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _tcp_connect(host: str, port: int) -> socket.socket:
    """Connect to host:port, trying each resolved address in turn."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError(f"no addresses for {host}")
    for family, type_, proto, _, address in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last


class _StreamsFromSocket:
    profile: str
    mode: str

    async def connect_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raise NotImplementedError

    async def open_connection(self, host: str, port: int, timeout: float) -> Streams:
        sock = await self.connect_socket(host, port, timeout)
        try:
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise

    def _fail(self, reason: Reason, detail: str, host: str, port: int) -> EgressError:
        return EgressError(
            EgressFailure(self.profile, self.mode, reason, detail, format_target(host, port))
        )


class DirectDialer(_StreamsFromSocket):
    """Connects from this host; the name is resolved locally."""

    def __init__(self, profile: str = "direct", mode: str = "direct") -> None:
        self.profile = profile
        self.mode = mode

    def __repr__(self) -> str:
        return f"DirectDialer({self.profile!r})"

    async def connect_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        if is_onion(host):
            detail = "an .onion name is reachable only through Tor"
            raise self._fail(Reason.TARGET_UNREACHABLE, detail, host, port)
        try:
            async with asyncio.timeout(timeout):
                return await _tcp_connect(host, port)
        except TimeoutError:
            detail = f"no connection within {timeout:g} s"
            raise self._fail(Reason.TIMEOUT, detail, host, port) from None
        except socket.gaierror as exc:
            raise self._fail(
                Reason.TARGET_UNREACHABLE, f"cannot resolve the name: {exc.strerror}", host, port
            ) from None
        except ConnectionRefusedError:
            raise self._fail(Reason.TARGET_REFUSED, "connection refused", host, port) from None
        except OSError as exc:
            raise self._fail(
                Reason.TARGET_UNREACHABLE, exc.strerror or str(exc), host, port
            ) from None


class SocksDialer(_StreamsFromSocket):
    """Connects through a SOCKS5 proxy or Tor SocksPort; the proxy resolves the name."""

    def __init__(
        self,
        profile: str,
        mode: str,
        proxy: tuple[str, int],
        *,
        credentials: tuple[str, str] | None = None,
        tor_control: TorControl | None = None,
    ) -> None:
        self.profile = profile
        self.mode = mode
        self.proxy = proxy
        self._credentials = credentials
        self.tor_control = tor_control
        self._logged: dict[tuple[Reason, str], float] = {}

    def __repr__(self) -> str:
        auth = ", auth" if self._credentials else ""
        return f"SocksDialer({self.profile!r}, {self.mode}, {format_target(*self.proxy)}{auth})"

    async def _tor_not_ready(self, host: str, port: int) -> EgressError | None:
        if self.tor_control is None:
            return None
        status = await self.tor_control.status()
        if status is None or status.ready:
            return None
        return self._fail(
            Reason.TOR_NOT_BOOTSTRAPPED,
            f"bootstrapped {status.progress}% ({status.summary or 'no summary'})",
            host,
            port,
        )

    async def connect_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        try:
            return await self._connect(host, port, timeout)
        except EgressError as exc:
            self._log_failure(exc.failure)
            raise

    def _log_failure(self, failure: EgressFailure) -> None:
        """Warn once per reason and target every LOG_EVERY seconds (health checks repeat)."""
        key = (failure.reason, failure.target)
        now = time.monotonic()
        if self._logged.get(key, -LOG_EVERY) + LOG_EVERY <= now:
            self._logged[key] = now
            log.warning("%s", failure.log_message())
        else:
            log.debug("%s", failure.log_message())

    async def _connect(self, host: str, port: int, timeout: float) -> socket.socket:
        if (error := await self._tor_not_ready(host, port)) is not None:
            raise error
        proxy = format_target(*self.proxy)
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(timeout):
                try:
                    sock = await _tcp_connect(*self.proxy)
                except OSError as exc:
                    raise self._fail(
                        Reason.PROXY_UNREACHABLE,
                        f"cannot connect to the proxy {proxy}: {exc.strerror or exc}",
                        host,
                        port,
                    ) from None
                await handshake(sock, host, port, self._credentials)
                return sock
        except TimeoutError:
            _close(sock)
            # The ControlPort answer is cached from the check above: no extra wait.
            if (error := await self._tor_not_ready(host, port)) is not None:
                raise error from None
            hint = "; Tor may not have bootstrapped" if self.mode == "tor" else ""
            raise self._fail(
                Reason.TIMEOUT,
                f"no connection through {proxy} within {timeout:g} s{hint}",
                host,
                port,
            ) from None
        except Socks5Error as exc:
            _close(sock)
            reason = exc.reason
            if self.mode == "tor" and exc.reply == 0x06:
                reason = Reason.TOR_CIRCUIT_FAILED
            raise self._fail(reason, f"{exc.detail} (proxy {proxy})", host, port) from None
        except BaseException:
            _close(sock)
            raise


def _close(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


class FallbackDialer(_StreamsFromSocket):
    """A proxied profile with `fail: open`: the proxy first, a direct connection if it fails."""

    def __init__(self, primary: SocksDialer) -> None:
        self.primary = primary
        self.profile = primary.profile
        self.mode = primary.mode
        self.fallback = DirectDialer(primary.profile, "direct fallback")

    def __repr__(self) -> str:
        return f"FallbackDialer({self.primary!r})"

    async def connect_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        try:
            return await self.primary.connect_socket(host, port, timeout)
        except EgressError as exc:
            if is_onion(host):
                raise
            failure = exc.failure
        log.warning("egress %r: falling back to a direct connection (fail: open)", self.profile)
        audit_log.warning(
            "egress fallback: profile=%s mode=%s target=%s reason=%s",
            failure.profile,
            failure.mode,
            failure.target,
            failure.reason.value,
            extra={
                "flm_audit": {
                    "event": "egress.fallback",
                    "profile": failure.profile,
                    "mode": failure.mode,
                    "target": failure.target,
                    "reason": failure.reason.value,
                }
            },
        )
        return await self.fallback.connect_socket(host, port, timeout)
