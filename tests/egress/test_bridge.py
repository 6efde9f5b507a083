"""The CONNECT bridge: token required, tunnels through the profile's dialer, failures marked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest

from flm_gateway.config.egress_settings import DirectEgress, Socks5Egress
from flm_gateway.egress.bridge import ConnectBridge, parse_authority
from flm_gateway.egress.failure import Reason, failure_from_message
from flm_gateway.egress.profiles import RuntimeProfile, make_profile
from tests.egress.fake_socks import FakeSocks
from tests.support.gateway_process import free_port

TOKEN = "Basic dGVzdDp0b2tlbg=="


def socks_profile(name: str, port: int, **extra: object) -> RuntimeProfile:
    config = Socks5Egress.model_validate(
        {"mode": "socks5", "url": f"socks5://127.0.0.1:{port}", **extra}
    )
    return make_profile(name, config)


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def connect(
    address: tuple[str, int], target: str, token: str | None = TOKEN
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection(*address)
    auth = f"Proxy-Authorization: {token}\r\n" if token else ""
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


def test_parse_authority() -> None:
    assert parse_authority("engine:80") == ("engine", 80)
    assert parse_authority("[::1]:8080") == ("::1", 8080)
    for bad in ("engine", "::1:80", "h:0", "h:x"):
        with pytest.raises(ValueError):
            parse_authority(bad)


async def test_tunnel_through_socks_with_token(echo: int) -> None:
    async with FakeSocks() as proxy:
        bridge = ConnectBridge(TOKEN)
        bridge.update(MappingProxyType({"b": socks_profile("b", proxy.port)}))
        address = bridge.address("b")
        assert address is not None and bridge.addresses == {address}
        await bridge.start()
        try:
            reader, writer, head = await connect(address, f"localhost:{echo}")
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.write(b"ping")
            assert await reader.read(100) == b"PING"
            writer.close()
            assert proxy.requests[0].host == "localhost"

            _, writer, head = await connect(address, f"localhost:{echo}", token=None)
            assert head.startswith(b"HTTP/1.1 407 ")
            writer.close()
        finally:
            await bridge.stop()


async def test_failures_carry_the_marker() -> None:
    bridge = ConnectBridge(TOKEN)
    bridge.update(MappingProxyType({"down": socks_profile("down", free_port())}))
    await bridge.start()
    try:
        address = bridge.address("down")
        assert address is not None
        _, writer, head = await connect(address, "engine.test:80")
        writer.close()
        status_line = head.split(b"\r\n")[0].decode()
        assert status_line.startswith("HTTP/1.1 503 ")
        failure = failure_from_message(status_line)
        assert failure is not None and failure.reason is Reason.PROXY_UNREACHABLE
        assert failure.profile == "down"
    finally:
        await bridge.stop()


async def test_update_binds_new_profiles_and_drops_removed_ones() -> None:
    bridge = ConnectBridge(TOKEN)
    direct = make_profile("direct", DirectEgress(mode="direct"))
    bridge.update(MappingProxyType({"direct": direct, "a": socks_profile("a", 1)}))
    assert bridge.address("direct") is None  # direct profiles need no bridge
    first = bridge.address("a")
    await bridge.start()
    bridge.update(MappingProxyType({"a": socks_profile("a", 2), "b": socks_profile("b", 3)}))
    assert bridge.address("a") == first  # unchanged name, same port
    await asyncio.sleep(0.05)
    b = bridge.address("b")
    assert b is not None
    _, writer = await asyncio.open_connection(*b)  # accepting
    writer.close()
    bridge.update(MappingProxyType({}))
    assert bridge.address("a") is None and bridge.addresses == frozenset()
    await bridge.stop()


async def test_mitmproxy_closing_ends_the_tunnel_even_if_the_engine_idles() -> None:
    closed = asyncio.Event()

    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Never closes by itself; sees EOF (or a reset) only when the bridge hangs up.
        await reader.read()
        closed.set()

    server = await asyncio.start_server(idle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with FakeSocks() as proxy:
        bridge = ConnectBridge(TOKEN)
        bridge.update(MappingProxyType({"b": socks_profile("b", proxy.port)}))
        await bridge.start()
        try:
            address = bridge.address("b")
            assert address is not None
            _, writer, head = await connect(address, f"localhost:{port}")
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.close()
            await asyncio.wait_for(closed.wait(), 2)
        finally:
            await bridge.stop()
            server.close()
