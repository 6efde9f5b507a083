from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from flm_gateway.tls.acme_challenges import (
    CHALLENGE_PREFIX,
    ChallengeTokens,
    HttpSideServer,
    RedirectTarget,
    redirect_location,
)
from tests.support.gateway_process import free_port

TARGET = RedirectTarget(8443, ("gw.test", "*.gw.test"), 308)


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("gw.test", "/v1/models?x=1", "https://gw.test:8443/v1/models?x=1"),
        ("gw.test:80", "/", "https://gw.test:8443/"),
        ("api.gw.test", "/a", "https://api.gw.test:8443/a"),
        ("evil.example", "/a", "https://gw.test:8443/a"),  # no open redirect
        (None, "/a", "https://gw.test:8443/a"),
        ("192.0.2.7:80", "/a", "https://192.0.2.7:8443/a"),
        ("[2001:db8::1]:80", "/a", "https://[2001:db8::1]:8443/a"),
    ],
)
def test_redirect_location(host: str | None, path: str, expected: str) -> None:
    assert redirect_location(host, path, TARGET) == expected


def test_port_443_is_implied_and_wildcard_only_targets_need_a_known_host() -> None:
    assert (
        redirect_location("gw.test", "/", RedirectTarget(443, ("gw.test",))) == "https://gw.test/"
    )
    only_wildcard = RedirectTarget(443, ("*.gw.test",))
    assert redirect_location("a.gw.test", "/", only_wildcard) == "https://a.gw.test/"
    assert redirect_location("evil.example", "/", only_wildcard) is None


def test_tokens() -> None:
    tokens = ChallengeTokens()
    tokens.add("t1", "t1.thumb")
    assert tokens.get("t1") == "t1.thumb" and len(tokens) == 1
    tokens.remove("t1")
    tokens.remove("t1")
    assert tokens.get("t1") is None


async def test_side_server_answers_challenges_redirects_and_refuses_unknown_hosts() -> None:
    port = free_port()
    server = HttpSideServer(("127.0.0.1", port))
    assert not server.running
    await server.start()
    await server.start()  # a second start is a no-op
    assert server.running
    base = f"http://127.0.0.1:{port}"
    server.tokens.add("tok", "tok.thumb")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}{CHALLENGE_PREFIX}tok") as r:
                assert (r.status, await r.text()) == (200, "tok.thumb")
                assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            async with session.get(f"{base}{CHALLENGE_PREFIX}other") as r:
                assert (r.status, await r.text()) == (404, "unknown challenge token\n")
            async with session.get(f"{base}/v1/models") as r:
                assert (r.status, await r.text()) == (404, "not found\n")
            server.redirect = RedirectTarget(8443, ("gw.test",), 301)
            headers = {"Host": "gw.test"}
            url = f"{base}/v1/models?x=%20y"
            async with session.get(url, headers=headers, allow_redirects=False) as r:
                assert r.status == 301
                assert r.headers["Location"] == "https://gw.test:8443/v1/models?x=%20y"
                assert r.headers["Cache-Control"] == "no-store"
                assert "served over HTTPS" in await r.text()
            # an unknown token is redirected too, when there is a redirect
            url = f"{base}{CHALLENGE_PREFIX}other"
            async with session.get(url, headers=headers, allow_redirects=False) as r:
                assert r.status == 301
            # HTTP/1.0 without Host: the address it arrived on (an IP is always allowed)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /a?b HTTP/1.0\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 301 ")
            assert b"\r\nLocation: https://127.0.0.1:8443/a?b\r\n" in answer
            server.redirect = RedirectTarget(8443, ("*.gw.test",))
            async with session.get(base, headers={"Host": "evil.example"}) as r:
                assert (r.status, await r.text()) == (400, "unknown host; use HTTPS\n")
    finally:
        await server.stop()
    assert not server.running
    with pytest.raises(aiohttp.ClientConnectorError):
        async with aiohttp.ClientSession() as session, session.get(base):
            pass


async def test_side_server_start_raises_oserror_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HttpSideServer(("127.0.0.1", taken.getsockname()[1]))
        with pytest.raises(OSError):
            await server.start()
        assert not server.running
