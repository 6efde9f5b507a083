"""The SOCKS5 handshake: names go to the proxy unresolved, every failure has its reason."""

from __future__ import annotations

import asyncio
import socket

import pytest

from flm_gateway.egress.failure import Reason
from flm_gateway.egress.socks5 import Socks5Error, address_field, handshake


def test_names_are_sent_as_names_and_ips_as_addresses() -> None:
    assert address_field("abc.onion") == b"\x03\x09abc.onion"
    assert address_field("127.0.0.1") == b"\x01\x7f\x00\x00\x01"
    assert address_field("::1")[0] == 4 and len(address_field("[::1]")) == 17


async def run(
    server_bytes: bytes, credentials: tuple[str, str] | None = None
) -> tuple[Exception | None, bytes]:
    """The handshake against a peer that answers `server_bytes`; (error, bytes the client sent)."""
    client, server = socket.socketpair()
    client.setblocking(False)
    server.sendall(server_bytes)
    server.shutdown(socket.SHUT_WR)
    error: Exception | None = None
    try:
        await asyncio.wait_for(handshake(client, "engine.test", 8000, credentials), 2)
    except Socks5Error as exc:
        error = exc
    finally:
        client.close()
    server.settimeout(1)
    sent = b""
    try:
        while chunk := server.recv(4096):
            sent += chunk
    except ConnectionResetError:  # the client closed with our bytes unread
        pass
    server.close()
    return error, sent


async def test_success_without_auth_sends_the_name() -> None:
    error, sent = await run(b"\x05\x00" + b"\x05\x00\x00\x01" + b"\x00" * 6)
    assert error is None
    assert sent == b"\x05\x01\x00" + b"\x05\x01\x00\x03\x0bengine.test\x1f\x40"


async def test_success_with_username_and_password() -> None:
    answer = b"\x05\x02" + b"\x01\x00" + b"\x05\x00\x00\x03\x04name\x00\x50"
    error, sent = await run(answer, ("user", "pw"))
    assert error is None
    assert sent.startswith(b"\x05\x02\x00\x02" + b"\x01\x04user\x02pw")


@pytest.mark.parametrize(
    ("answer", "credentials", "reason", "reply"),
    [
        (b"\x05\x02\x01\x01", ("user", "sekrit"), Reason.PROXY_AUTH_REJECTED, None),
        (b"\x05\xff", None, Reason.PROXY_AUTH_REJECTED, None),
        (b"\x05\x00\x05\x05\x00\x01" + b"\x00" * 6, None, Reason.TARGET_REFUSED, 5),
        (b"\x05\x00\x05\x04\x00\x01" + b"\x00" * 6, None, Reason.TARGET_UNREACHABLE, 4),
        (b"\x05\x00\x05\x02\x00\x01" + b"\x00" * 6, None, Reason.TARGET_FORBIDDEN, 2),
        (b"\x05\x00\x05\x01\x00\x01" + b"\x00" * 6, None, Reason.PROXY_ERROR, 1),
        (b"\x05\x00\x05\x06\x00\x01" + b"\x00" * 6, None, Reason.TARGET_UNREACHABLE, 6),
        (b"\x05\x00\x05\xf0\x00\x01" + b"\x00" * 6, None, Reason.TARGET_UNREACHABLE, 0xF0),
        (b"\x04\x5a", None, Reason.PROXY_ERROR, None),
        (b"", None, Reason.PROXY_ERROR, None),
    ],
)
async def test_failures_are_classified(
    answer: bytes, credentials: tuple[str, str] | None, reason: Reason, reply: int | None
) -> None:
    error, _ = await run(answer, credentials)
    assert isinstance(error, Socks5Error)
    assert error.reason is reason and error.reply == reply
    if credentials:
        assert credentials[1] not in str(error)
