"""The HTTP CONNECT -> SOCKS bridge that carries mitmproxy's upstream connections.

mitmproxy cannot dial through SOCKS; it can dial through an HTTP proxy
(`flow.server_conn.via`), sending `CONNECT host:port` and then speaking to
the engine end to end inside the tunnel (TLS with the engine's real name as
SNI, streaming untouched). This bridge is that HTTP proxy: one listener on
127.0.0.1 (a free port) per proxied profile, each dialling with its
profile's `Dialer`, so names are resolved by the SOCKS server or Tor.

Policy:
- Only CONNECT is served, and only with the `Proxy-Authorization` token of
  this gateway process: other local users cannot borrow the profile's proxy.
- The dial is bounded by the profile's `connect_timeout`.
- On failure the bridge answers `<status> flm-egress profile=.. mode=..
  reason=..` (see `failure.EgressFailure.marker`), which reaches the flow's
  error message; the target, proxy address and detail go to the log only.
- fail: open is the profile's dialer's business (`FallbackDialer`).

Listeners are bound synchronously in `update` (so the egress commit knows every
port at once) and accept once `start` ran; a removed profile's listener
closes, its open tunnels run to their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Mapping

from flm_gateway.egress.failure import EgressError, EgressFailure, Reason
from flm_gateway.egress.profiles import RuntimeProfile

log = logging.getLogger(__name__)

DEFAULT = "*default"
"""Listener key of the default profile's listener (not a valid profile name)."""
DIRECT_CONNECT_TIMEOUT = 10.0
HEAD_LIMIT = 8192
HEAD_TIMEOUT = 10.0
_CHUNK = 65536


def parse_authority(authority: str) -> tuple[str, int]:
    """('host', port) from 'host:port' or '[v6]:port'; ValueError otherwise."""
    host, sep, port_text = authority.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad CONNECT authority {authority!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bad CONNECT authority {authority!r}")
    return host, int(port_text)


def _reply(status: int, reason: str) -> bytes:
    return f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()


class ConnectBridge:
    """One CONNECT listener per proxied profile, dialling through that profile."""

    def __init__(self, proxy_authorization: str, host: str = "127.0.0.1") -> None:
        self._authorization = proxy_authorization.encode()
        self._host = host
        self._profiles: dict[str, RuntimeProfile] = {}
        self._default: RuntimeProfile | None = None
        self._sockets: dict[str, socket.socket] = {}
        self._servers: dict[str, asyncio.Server] = {}
        self._clients: set[asyncio.StreamWriter] = set()
        self._started = False
        self._tasks: set[asyncio.Task[None]] = set()

    def address(self, profile: str) -> tuple[str, int] | None:
        """The listener of a proxied profile, None if it has none."""
        sock = self._sockets.get(profile)
        if sock is None:
            return None
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def addresses(self) -> frozenset[tuple[str, int]]:
        return frozenset(a for name in self._sockets if (a := self.address(name)) is not None)

    @property
    def started(self) -> bool:
        return self._started

    def update(self, profiles: Mapping[str, RuntimeProfile], default: str | None = None) -> None:
        """Listen for every proxied profile in `profiles` and stop listening for the others.

        `default` names the profile the DEFAULT listener (see `ensure_default`) dials with.
        Binding (a free loopback port) happens now, synchronously, and never raises: a
        profile whose listener cannot be bound (no file descriptor left) is logged and left
        without one, so its engines get 503 `egress_unavailable` (or go direct when the
        profile fails open), as when the bridge is not running.
        """
        wanted = {}
        for name, profile in profiles.items():
            if not profile.proxied:
                continue
            try:
                self._bind(name)
            except OSError as exc:
                log.error("egress %r: cannot bind its CONNECT bridge listener: %s", name, exc)
                continue
            wanted[name] = profile
        self._profiles = wanted
        if default is not None and default in profiles:
            self._default = profiles[default]
        for name in [n for n in self._sockets if n not in wanted and n != DEFAULT]:
            sock = self._sockets.pop(name)
            server = self._servers.pop(name, None)
            if server is not None:
                server.close()
            else:
                sock.close()
        if self._started:
            loop = asyncio.get_running_loop()
            for name in self._sockets:
                if name not in self._servers:
                    task = loop.create_task(self._serve(name))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    def ensure_default(self) -> tuple[str, int]:
        """A listener that always dials with the current default profile (direct included).

        Its address never changes, so a client configured once (the ACME client) follows
        reloads. Bound now; it accepts once the bridge runs.
        """
        self._bind(DEFAULT)
        address = self.address(DEFAULT)
        if address is None:  # pragma: no cover - just bound
            raise OSError("the default egress listener is not bound")
        return address

    def _bind(self, name: str) -> None:
        if name in self._sockets:
            return
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        try:
            sock.bind((self._host, 0))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sockets[name] = sock

    async def start(self) -> None:
        """Accept on every bound listener."""
        self._started = True
        for name in list(self._sockets):
            if name not in self._servers:
                await self._serve(name)

    async def _serve(self, name: str) -> None:
        sock = self._sockets.get(name)
        if sock is None or name in self._servers:
            return

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(name, reader, writer)

        self._servers[name] = await asyncio.start_server(handle, sock=sock, limit=HEAD_LIMIT * 2)
        log.debug("egress bridge for %r listening on %s:%s", name, *sock.getsockname()[:2])

    async def stop(self) -> None:
        """Close every listener and every open tunnel."""
        self._started = False
        servers = list(self._servers.values())
        self._servers.clear()
        for server in servers:
            server.close()
        for sock in self._sockets.values():
            with contextlib.suppress(OSError):
                sock.close()
        self._sockets.clear()
        for writer in list(self._clients):
            writer.transport.abort()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _handle(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._clients.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream = await self._open_tunnel(name, reader, writer)
            if upstream is None or upstream_reader is None:
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _relay(reader, writer, upstream_reader, upstream)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            for w in (writer, upstream):
                if w is not None:
                    w.close()

    async def _open_tunnel(
        self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader | None, asyncio.StreamWriter | None]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return None, None
        if len(head) > HEAD_LIMIT:
            writer.write(_reply(431, "Request Header Fields Too Large"))
            return None, None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[0] != "CONNECT":
            writer.write(_reply(405, "Method Not Allowed"))
            return None, None
        if not self._authorized(lines[1:]):
            writer.write(_reply(407, "Proxy Authentication Required"))
            return None, None
        try:
            host, port = parse_authority(parts[1])
        except ValueError:
            writer.write(_reply(400, "Bad Request"))
            return None, None
        profile = self._default if name == DEFAULT else self._profiles.get(name)
        if profile is None:
            failure = EgressFailure(name, "unknown", Reason.EGRESS_UNAVAILABLE)
            writer.write(_reply(failure.status, failure.marker()))
            return None, None
        timeout = profile.connect_timeout or DIRECT_CONNECT_TIMEOUT
        try:
            sock = await profile.dialer.connect_socket(host, port, timeout)
        except EgressError as exc:  # the dialer logged it
            writer.write(_reply(exc.failure.status, exc.failure.marker()))
            return None, None
        try:
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise

    def _authorized(self, header_lines: list[str]) -> bool:
        for line in header_lines:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == "proxy-authorization":
                return hmac.compare_digest(value.strip().encode(), self._authorization)
        return False


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close `dst`; chunks are forwarded as they arrive."""
    while data := await src.read(_CHUNK):
        dst.write(data)
        await dst.drain()
    if dst.can_write_eof():
        dst.write_eof()


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until mitmproxy's side ends (or either side fails).

    The engine closing first is passed on as a half-close and the tunnel stays until
    mitmproxy closes; mitmproxy closing ends the tunnel at once, so an engine that keeps
    idle connections open cannot keep a tunnel (and its proxy connection) alive.
    """
    outbound = asyncio.ensure_future(_pipe(client_reader, upstream_writer))
    inbound = asyncio.ensure_future(_pipe(upstream_reader, client_writer))
    try:
        done, _ = await asyncio.wait({outbound, inbound}, return_when=asyncio.FIRST_COMPLETED)
        if inbound in done and inbound.exception() is None:
            await outbound
    finally:
        for task in (outbound, inbound):
            task.cancel()
        for task in (outbound, inbound):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
