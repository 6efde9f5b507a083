"""A SOCKS5 client handshake (RFC 1928, RFC 1929) that never resolves names locally.

The target host is sent to the proxy as it is written: IP literals as
addresses, everything else (host names, `.onion`) as a domain name for the
proxy to resolve. Each way the handshake can fail maps to one `Reason`, so a
client learns whether the proxy was down, refused the credentials, or could
not reach the target. Tor's extended replies (0xF0-0xF7, onion services) are
recognised too. Credentials never appear in messages.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

from flm_gateway.egress.failure import Reason

VERSION = 5
_NO_AUTH, _USER_PASS, _NO_ACCEPTABLE = 0x00, 0x02, 0xFF
_CONNECT = 0x01
_ATYP_IPV4, _ATYP_DOMAIN, _ATYP_IPV6 = 0x01, 0x03, 0x04

_REPLIES: dict[int, tuple[Reason, str]] = {
    0x01: (Reason.PROXY_ERROR, "general SOCKS server failure"),
    0x02: (Reason.TARGET_FORBIDDEN, "connection not allowed by ruleset"),
    0x03: (Reason.TARGET_UNREACHABLE, "network unreachable"),
    0x04: (Reason.TARGET_UNREACHABLE, "host unreachable"),
    0x05: (Reason.TARGET_REFUSED, "connection refused"),
    0x06: (Reason.TARGET_UNREACHABLE, "TTL expired"),
    0x07: (Reason.PROXY_ERROR, "command not supported"),
    0x08: (Reason.PROXY_ERROR, "address type not supported"),
    # Tor's ExtendedErrors (onion services).
    0xF0: (Reason.TARGET_UNREACHABLE, "onion service descriptor not found"),
    0xF1: (Reason.TARGET_UNREACHABLE, "onion service descriptor is invalid"),
    0xF2: (Reason.TARGET_UNREACHABLE, "onion service introduction failed"),
    0xF3: (Reason.TARGET_UNREACHABLE, "onion service rendezvous failed"),
    0xF4: (Reason.TARGET_UNREACHABLE, "onion service client authorization missing"),
    0xF5: (Reason.TARGET_UNREACHABLE, "onion service client authorization wrong"),
    0xF6: (Reason.TARGET_UNREACHABLE, "invalid onion address"),
    0xF7: (Reason.TARGET_UNREACHABLE, "onion service introduction timed out"),
}


class Socks5Error(Exception):
    """The SOCKS5 handshake failed; `reason` classifies it, `reply` is the proxy's code."""

    def __init__(self, reason: Reason, detail: str, reply: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.reply = reply


def address_field(host: str) -> bytes:
    """ATYP and address of a SOCKS5 request: IP literals as such, names as domain names."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) <= 255:
            raise Socks5Error(Reason.TARGET_UNREACHABLE, "host name too long") from None
        return bytes([_ATYP_DOMAIN, len(name)]) + name
    if ip.version == 4:
        return bytes([_ATYP_IPV4]) + ip.packed
    return bytes([_ATYP_IPV6]) + ip.packed


async def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < count:
        try:
            chunk = await loop.sock_recv(sock, count - len(data))
        except OSError as exc:
            raise Socks5Error(
                Reason.PROXY_ERROR, f"proxy connection failed: {exc.strerror or exc}"
            ) from None
        if not chunk:
            raise Socks5Error(Reason.PROXY_ERROR, "the proxy closed the connection")
        data += chunk
    return data


async def _send(sock: socket.socket, data: bytes) -> None:
    try:
        await asyncio.get_running_loop().sock_sendall(sock, data)
    except OSError as exc:
        raise Socks5Error(
            Reason.PROXY_ERROR, f"proxy connection failed: {exc.strerror or exc}"
        ) from None


async def handshake(
    sock: socket.socket,
    host: str,
    port: int,
    credentials: tuple[str, str] | None = None,
) -> None:
    """Ask the proxy on `sock` (connected, non-blocking) to CONNECT to host:port."""
    methods = bytes([_NO_AUTH, _USER_PASS]) if credentials else bytes([_NO_AUTH])
    await _send(sock, bytes([VERSION, len(methods)]) + methods)
    version, method = await _recv_exactly(sock, 2)
    if version != VERSION:
        raise Socks5Error(Reason.PROXY_ERROR, f"not a SOCKS5 proxy (version byte {version})")
    if method == _NO_ACCEPTABLE:
        detail = (
            "the proxy accepted none of the offered authentication methods"
            if credentials
            else "the proxy requires authentication and no credentials are configured"
        )
        raise Socks5Error(Reason.PROXY_AUTH_REJECTED, detail)
    if method == _USER_PASS and credentials:
        user, password = (part.encode() for part in credentials)
        await _send(sock, bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        _, status = await _recv_exactly(sock, 2)
        if status != 0:
            raise Socks5Error(Reason.PROXY_AUTH_REJECTED, "username/password rejected")
    elif method != _NO_AUTH:
        raise Socks5Error(Reason.PROXY_ERROR, f"the proxy chose an unoffered method {method}")

    await _send(sock, bytes([VERSION, _CONNECT, 0]) + address_field(host) + struct.pack("!H", port))
    version, reply, _, atyp = await _recv_exactly(sock, 4)
    if version != VERSION:
        raise Socks5Error(Reason.PROXY_ERROR, f"malformed SOCKS5 reply (version byte {version})")
    if reply != 0:
        reason, text = _REPLIES.get(reply, (Reason.PROXY_ERROR, "unknown reply"))
        raise Socks5Error(reason, f"SOCKS5 reply {reply:#04x}: {text}", reply)
    # Skip the bound address: IPv4, domain (length-prefixed) or IPv6, then the port.
    if atyp == _ATYP_IPV4:
        await _recv_exactly(sock, 4 + 2)
    elif atyp == _ATYP_IPV6:
        await _recv_exactly(sock, 16 + 2)
    elif atyp == _ATYP_DOMAIN:
        (length,) = await _recv_exactly(sock, 1)
        await _recv_exactly(sock, length + 2)
    else:
        raise Socks5Error(Reason.PROXY_ERROR, f"malformed SOCKS5 reply (address type {atyp})")
