"""aiohttp sessions of a profile: through the proxy, names unresolved, TLS keeps the real name."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientConnectorError, web

from flm_gateway.egress.dialer import Dialer, SocksDialer
from flm_gateway.egress.failure import EgressError, Reason
from flm_gateway.egress.sessions import make_session
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
            async with make_session(lambda: (dialer, 2.0)) as session, session.get(url) as response:
                assert response.status == 200
            assert [r.host for r in proxy.requests] == ["localhost"]

        down: Dialer = SocksDialer("down", "socks5", ("127.0.0.1", free_port()))
        async with make_session(lambda: (down, 2.0)) as session:
            with pytest.raises(ClientConnectorError) as caught:
                await session.get(f"http://localhost:{port}/")
        error = caught.value.os_error
        assert isinstance(error, EgressError)
        assert error.failure.reason is Reason.PROXY_UNREACHABLE
    finally:
        await runner.cleanup()
