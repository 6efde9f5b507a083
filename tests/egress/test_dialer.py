"""Dialers against a scripted SOCKS5 server on 127.0.0.1: remote DNS, reasons, fail open."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from flm_gateway.egress.dialer import DirectDialer, FallbackDialer, SocksDialer
from flm_gateway.egress.failure import EgressError, Reason
from flm_gateway.egress.tor import BootstrapStatus, TorControl
from tests.egress.fake_socks import FakeSocks
from tests.support.gateway_process import free_port


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


def no_local_dns(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Fail the test if anything resolves `name` on this host."""
    real = asyncio.get_running_loop().getaddrinfo

    async def guarded(host: object, *args: object, **kwargs: object) -> object:
        assert host != name, f"{name} was resolved locally"
        return await real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", guarded)


async def roundtrip(dialer: object, host: str, port: int) -> bytes:
    reader, writer = await dialer.open_connection(host, port, 2)  # type: ignore[attr-defined]
    writer.write(b"ping")
    data = await reader.read(100)
    writer.close()
    return bytes(data)


async def test_socks_dialer_sends_the_name_to_the_proxy(
    echo: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeSocks(credentials=("u", "pw")) as proxy:
        dialer = SocksDialer("b", "socks5", ("127.0.0.1", proxy.port), credentials=("u", "pw"))
        no_local_dns(monkeypatch, "localhost")
        assert await roundtrip(dialer, "localhost", echo) == b"ping"
        assert proxy.requests[0].atyp == 3 and proxy.requests[0].host == "localhost"
        # .onion names go to the proxy as names too (it cannot resolve this one).
        with pytest.raises(EgressError) as caught:
            await dialer.open_connection("abcdefgh.onion", 80, 2)
        assert proxy.requests[1].host == "abcdefgh.onion"
        assert caught.value.failure.reason is Reason.TARGET_REFUSED
    assert "pw" not in repr(dialer)


async def test_failures_name_the_profile_and_reason() -> None:
    closed = free_port()
    dialer = SocksDialer("gone", "socks5", ("127.0.0.1", closed))
    with pytest.raises(EgressError) as caught:
        await dialer.open_connection("engine.test", 80, 2)
    failure = caught.value.failure
    assert (failure.profile, failure.mode, failure.reason) == (
        "gone", "socks5", Reason.PROXY_UNREACHABLE,
    )  # fmt: skip
    assert failure.status == 503 and failure.target == "engine.test:80"
    assert f"127.0.0.1:{closed}" in failure.detail

    async with FakeSocks(credentials=("u", "right")) as proxy:
        wrong = SocksDialer("auth", "socks5", ("127.0.0.1", proxy.port), credentials=("u", "bad"))
        with pytest.raises(EgressError) as caught:
            await wrong.open_connection("engine.test", 80, 2)
        assert caught.value.failure.reason is Reason.PROXY_AUTH_REJECTED
        assert "bad" not in str(caught.value)


async def test_timeouts_are_the_profiles_not_the_proxys() -> None:
    async with FakeSocks(silent=True) as proxy:
        dialer = SocksDialer("slow", "tor", ("127.0.0.1", proxy.port))
        started = asyncio.get_running_loop().time()
        with pytest.raises(EgressError) as caught:
            await dialer.open_connection("engine.test", 80, 0.3)
        assert asyncio.get_running_loop().time() - started < 1
        assert caught.value.failure.reason is Reason.TIMEOUT
        assert "Tor may not have bootstrapped" in caught.value.failure.detail


async def test_tor_ttl_expired_is_a_circuit_failure() -> None:
    async with FakeSocks(reply=6) as proxy:
        dialer = SocksDialer("onion", "tor", ("127.0.0.1", proxy.port))
        with pytest.raises(EgressError) as caught:
            await dialer.open_connection("x.onion", 80, 2)
        assert caught.value.failure.reason is Reason.TOR_CIRCUIT_FAILED


class NotReady(TorControl):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 9))

    async def status(self, *, fresh: bool = False) -> BootstrapStatus | None:
        return BootstrapStatus(5, "Connecting to a relay")


async def test_tor_not_bootstrapped_fails_at_once_without_dialling() -> None:
    async with FakeSocks() as proxy:
        dialer = SocksDialer("onion", "tor", ("127.0.0.1", proxy.port), tor_control=NotReady())
        with pytest.raises(EgressError) as caught:
            await dialer.open_connection("x.onion", 80, 5)
        assert caught.value.failure.reason is Reason.TOR_NOT_BOOTSTRAPPED
        assert "5%" in caught.value.failure.detail
        assert proxy.requests == []


async def test_direct_dialer(echo: int) -> None:
    dialer = DirectDialer()
    assert await roundtrip(dialer, "127.0.0.1", echo) == b"ping"
    with pytest.raises(EgressError) as caught:
        await dialer.open_connection("127.0.0.1", free_port(), 1)
    assert caught.value.failure.reason is Reason.TARGET_REFUSED
    assert not caught.value.failure.proxied
    with pytest.raises(EgressError) as caught:
        await dialer.open_connection("x.onion", 80, 1)
    assert caught.value.failure.reason is Reason.TARGET_UNREACHABLE


async def test_fail_open_falls_back_and_writes_an_audit_record(
    echo: int, caplog: pytest.LogCaptureFixture
) -> None:
    dialer = FallbackDialer(SocksDialer("flaky", "socks5", ("127.0.0.1", free_port())))
    with caplog.at_level(logging.WARNING):
        assert await roundtrip(dialer, "127.0.0.1", echo) == b"ping"
    audit = [r for r in caplog.records if r.name == "flm_gateway.audit"]
    assert len(audit) == 1
    assert audit[0].flm_audit == {  # type: ignore[attr-defined]
        "event": "egress.fallback",
        "profile": "flaky",
        "mode": "socks5",
        "target": f"127.0.0.1:{echo}",
        "reason": "proxy_unreachable",
    }
    assert any("falling back to a direct connection" in r.getMessage() for r in caplog.records)
    # .onion never falls back to a direct connection.
    with pytest.raises(EgressError):
        await dialer.open_connection("x.onion", 80, 1)
