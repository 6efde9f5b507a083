"""HTTP sessions of a profile: through the proxy, names unresolved, failures keep their reason."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from flm_gateway.egress.dialer import Dialer, SocksDialer
from flm_gateway.egress.failure import EgressError, Reason
from flm_gateway.egress.sessions import make_session
from flm_gateway.httpio.http_client import ConnectError
from tests.egress.fake_socks import FakeSocks
from tests.support.gateway_process import free_port


async def test_session_goes_through_the_proxy_without_local_dns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = web.Application()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": []})

    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    real = asyncio.get_running_loop().getaddrinfo

    async def guarded(host: object, *args: object, **kwargs: object) -> object:
        assert host != "localhost", "the engine's name was resolved locally"
        return await real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", guarded)
    try:
        async with FakeSocks() as proxy:
            dialer: Dialer = SocksDialer("b", "socks5", ("127.0.0.1", proxy.port))
            url = f"http://localhost:{port}/v1/models"
            async with make_session(lambda: (dialer, 2.0)) as session:
                response = await session.get(url, timeout=5)
            assert (response.status, response.body) == (200, b'{"data": []}')
            assert [r.host for r in proxy.requests] == ["localhost"]

        down: Dialer = SocksDialer("down", "socks5", ("127.0.0.1", free_port()))
        async with make_session(lambda: (down, 2.0)) as session:
            with pytest.raises(ConnectError) as caught:
                await session.get(f"http://localhost:{port}/", timeout=5)
        error = caught.value.os_error
        assert isinstance(error, EgressError)
        assert error.failure.reason is Reason.PROXY_UNREACHABLE
    finally:
        await runner.cleanup()


async def test_the_dialer_is_looked_up_for_every_new_connection() -> None:
    """A session made before a reload egresses the new way after it."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with FakeSocks() as first, FakeSocks() as second:
            current: list[Dialer] = [SocksDialer("p", "socks5", ("127.0.0.1", first.port))]
            async with make_session(lambda: (current[0], 2.0), max_idle=0) as session:
                await session.get(f"http://localhost:{port}/", timeout=5)
                current[0] = SocksDialer("p", "socks5", ("127.0.0.1", second.port))
                await session.get(f"http://localhost:{port}/", timeout=5)
            assert (len(first.requests), len(second.requests)) == (1, 1)
    finally:
        await runner.cleanup()
