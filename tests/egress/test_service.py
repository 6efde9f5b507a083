"""EgressService: plan lookups, factories that follow reloads, the ACME proxy URL."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import pytest
import requests

from flm_gateway.config import LoadedConfig, parse_config
from flm_gateway.egress.dialer import DirectDialer, FallbackDialer, SocksDialer
from flm_gateway.egress.egress_service import EgressService
from tests.egress.fake_socks import FakeSocks

LISTENERS = 'listeners: [{name: main, bind: "127.0.0.1:8088"}]\n'


def loaded(text: str, environ: dict[str, str] | None = None) -> LoadedConfig:
    config, state_dir = parse_config(LISTENERS + text, environ=environ or {})
    return LoadedConfig(config=config, path=None, state_dir=state_dir, source=text)


@pytest.fixture
def http_target() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_lookups_and_reload() -> None:
    service = EgressService()
    service.commit(
        service.prepare(
            loaded(
                """\
egress:
  default: s
  s: {mode: socks5, url: "socks5://127.0.0.1:1", connect_timeout: 7s}
  o: {mode: tor, fail: open}
engines:
  - {name: a, url: "http://a:1"}
  - {name: b, url: "http://b:1", egress: direct, timeouts: {connect: 2s}}
  - {name: c, url: "http://c:1", egress: o}
"""
            )
        )
    )
    assert isinstance(service.dialer("a"), SocksDialer)
    assert isinstance(service.dialer("b"), DirectDialer)
    assert isinstance(service.dialer("c"), FallbackDialer)
    assert isinstance(service.dialer("unknown-engine"), SocksDialer)  # the default profile
    assert service.connect_timeout("a") == 7.0 and service.connect_timeout("b") == 2.0
    assert service.plan.fail_closed_targets == {("a", 1): "s"}
    first = service.dialer("a")
    service.commit(
        service.prepare(
            loaded(
                """\
egress:
  default: s
  s: {mode: socks5, url: "socks5://127.0.0.1:1", connect_timeout: 7s}
engines: [{name: a, url: "http://a:1"}]
"""
            )
        )
    )
    assert service.dialer("a") is first  # unchanged profile: same dialer
    assert service.dialer("c") is first  # engine gone: default profile
    await service.stop()


async def test_acme_proxy_url_is_stable_and_follows_the_default_profile(
    http_target: int,
) -> None:
    async with FakeSocks() as proxy:
        service = EgressService()
        acme_url = service.acme_proxy_url()  # known before any config: the gateway's start
        assert acme_url.startswith("http://flm:")
        service.commit(
            service.prepare(
                loaded(
                    f"""\
egress:
  default: s
  s: {{mode: socks5, url: "socks5://127.0.0.1:{proxy.port}", username: u, password: "${{PW}}"}}
""",
                    {"PW": "p@ss:word"},
                )
            )
        )
        proxy.credentials = ("u", "p@ss:word")
        assert service.socks_proxy_url() == f"socks5h://u:p%40ss%3Aword@127.0.0.1:{proxy.port}"
        await service.start()
        try:
            assert service.acme_proxy_url() == acme_url
            # requests sends absolute-form GET for http:// through a proxy; the bridge serves
            # CONNECT only (what requests uses for https://, as ACME is), so it says 405.
            response = await asyncio.to_thread(
                requests.get,
                f"http://localhost:{http_target}/directory",
                proxies={"http": acme_url, "https": acme_url},
                timeout=5,
            )
            assert response.status_code == 405
            assert await asyncio.to_thread(_get_through_connect, acme_url, http_target) == b"ok"
            assert [r.host for r in proxy.requests] == ["localhost"]
            # A reload to a direct default: same URL, now direct.
            service.commit(service.prepare(loaded("engines: []\n")))
            assert await asyncio.to_thread(_get_through_connect, acme_url, http_target) == b"ok"
            assert len(proxy.requests) == 1
            assert service.socks_proxy_url() is None
        finally:
            await service.stop()


def _get_through_connect(proxy_url: str, port: int) -> bytes:
    """What requests does for https:// through an HTTP proxy: CONNECT, then the request."""
    import base64
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(proxy_url)
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    with socket.create_connection((parts.hostname, parts.port), 5) as sock:
        auth = f"Proxy-Authorization: Basic {token}\r\n"
        sock.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\n{auth}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]
