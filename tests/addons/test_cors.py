"""cors: preflights answered by the gateway; headers only for allowed origins; other
requests from origins it does not allow are refused (403)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import http

from flm_gateway.addons.cors import Cors
from flm_gateway.addons.host_check import HostCheck
from flm_gateway.proxy.flow_meta import SECURITY_REJECTED
from tests.support.flows import configure, error_of
from tests.support.security import BASE, flow, loaded, run_hooks

SECURITY = """
cors:
  allow_origins: ["https://app.example.com", "https://*.example.org", "http://localhost:5173"]
"""


def _preflight(
    config, origin: str, method: str = "POST", wanted: str = "authorization, content-type"
):  # type: ignore[no-untyped-def]
    return flow(
        config,
        "OPTIONS",
        "/v1/chat/completions",
        headers={
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": wanted,
        },
    )


async def test_preflight_allowed_and_refused(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    cors = Cors()
    configure(config, cors)
    hooks = ("requestheaders", "request", "responseheaders")

    allowed = _preflight(config, "https://app.example.com")
    await run_hooks([cors], allowed, hooks)
    assert allowed.response is not None and allowed.response.status_code == 204
    headers = allowed.response.headers
    assert headers["access-control-allow-origin"] == "https://app.example.com"
    assert headers["access-control-allow-headers"] == "authorization, content-type"
    assert "POST" in headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in headers

    sub = _preflight(config, "https://chat.example.org", wanted="x-stainless-os, authorization")
    await run_hooks([cors], sub, hooks)
    assert sub.response is not None and sub.response.status_code == 204

    for origin, method, wanted in (
        ("https://evil.com", "POST", "authorization"),
        ("https://example.org", "POST", "authorization"),  # wildcard needs a subdomain
        ("https://app.example.com.evil.com", "POST", "authorization"),
        ("https://app.example.com", "DELETE", "authorization"),
        ("https://app.example.com", "POST", "x-secret-header"),
        ("null", "POST", ""),
    ):
        refused = _preflight(config, origin, method, wanted)
        await run_hooks([cors], refused, hooks)
        assert refused.response is not None and refused.response.status_code == 403, origin
        assert not any(k.lower().startswith("access-control-") for k in refused.response.headers)


async def test_actual_responses_and_engine_headers(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    cors = Cors()
    configure(config, cors)

    def answered(origin: str | None) -> http.HTTPFlow:
        target = flow(config, headers={"origin": origin} if origin else {})
        target.response = http.Response.make(
            200, b"{}", {"access-control-allow-origin": "*", "content-type": "application/json"}
        )
        cors.responseheaders(target)
        return target

    ok = answered("http://localhost:5173").response
    assert ok is not None and ok.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "x-ratelimit-remaining-requests" in ok.headers["access-control-expose-headers"]
    assert "Origin" in ok.headers["vary"]
    other = answered("https://evil.com").response
    assert other is not None and "access-control-allow-origin" not in other.headers
    no_origin = answered(None).response
    assert no_origin is not None and "access-control-allow-origin" not in no_origin.headers


async def test_no_origins_configured_means_no_cors_at_all(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    cors = Cors()
    configure(config, cors)
    target = _preflight(config, "https://app.example.com")
    await run_hooks([cors], target, ("requestheaders", "responseheaders"))
    assert target.response is not None and target.response.status_code == 403


async def test_star_with_and_without_credentials(tmp_path: Path) -> None:
    config = loaded('cors: {allow_origins: ["*"]}', tmp_path)
    cors = Cors()
    configure(config, cors)
    target = _preflight(config, "https://anything.test")
    await run_hooks([cors], target, ("requestheaders", "responseheaders"))
    assert target.response is not None
    assert target.response.headers["access-control-allow-origin"] == "*"


def _request(config, origin: str | None, **kwargs):  # type: ignore[no-untyped-def]
    """A non-preflight request through host_check (which notes the Host) and cors."""
    headers = dict(kwargs.pop("headers", {}))
    if origin is not None:
        headers["origin"] = origin
    target = flow(config, "POST", "/v1/chat/completions", headers=headers, **kwargs)
    target.client_conn.timestamp_tls_setup = None  # a plain-HTTP listener
    checker = HostCheck()
    configure(config, checker)
    cors = Cors()
    configure(config, cors)
    checker.requestheaders(target)
    cors.requestheaders(target)
    return target


def _refused(target: http.HTTPFlow) -> bool:
    if target.response is None:
        return False
    status, error = error_of(target)
    assert (status, error["code"]) == (403, "origin_not_allowed")
    assert SECURITY_REJECTED.require(target) == "origin"
    return True


@pytest.mark.parametrize(
    ("origin", "host", "refused"),
    [
        ("https://app.example.com", "127.0.0.1:8088", False),  # allowed by CORS
        ("https://chat.example.org", "127.0.0.1:8088", False),
        ("http://127.0.0.1:8088", "127.0.0.1:8088", False),  # same origin
        ("HTTP://LOCALHOST:8088", "localhost:8088", False),
        ("http://localhost", "localhost:80", False),
        ("http://localhost:80", "localhost", False),
        ("http://[::1]:8088", "127.0.0.1:8088", True),
        ("https://evil.example", "127.0.0.1:8088", True),
        ("null", "127.0.0.1:8088", True),
        ("", "127.0.0.1:8088", True),
        ("http://localhost:8088", "127.0.0.1:8088", True),
        ("https://127.0.0.1:8088", "127.0.0.1:8088", True),
        ("http://127.0.0.1:8089", "127.0.0.1:8088", True),
        ("http://127.0.0.1:8088/", "127.0.0.1:8088", True),
        ("http://127.0.0.1:8088.evil.example", "127.0.0.1:8088", True),
        ("http://user@127.0.0.1:8088", "127.0.0.1:8088", True),
        ("ws://127.0.0.1:8088", "127.0.0.1:8088", True),
        ("https://app.example.com, https://evil.example", "127.0.0.1:8088", True),
    ],
)
def test_non_preflight_origins(tmp_path: Path, origin: str, host: str, refused: bool) -> None:
    target = _request(loaded(SECURITY, tmp_path), origin, headers={"host": host})
    assert _refused(target) is refused


def test_a_second_origin_header_is_refused(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    target = flow(config, "POST", "/v1/chat/completions")
    target.request.headers.fields += (
        (b"Origin", b"https://app.example.com"),
        (b"Origin", b"https://evil.example"),
    )
    cors = Cors()
    configure(config, cors)
    cors.requestheaders(target)
    assert _refused(target)


def test_same_origin_without_cors_config_and_on_tls(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    assert not _refused(_request(config, "http://127.0.0.1:8088"))
    assert _refused(_request(config, "https://app.example.com"))
    secure = flow(
        config, "POST", "/v1/chat/completions", headers={"origin": "https://127.0.0.1:8088"}
    )
    checker, cors = HostCheck(), Cors()
    configure(config, checker)
    configure(config, cors)
    checker.requestheaders(secure)  # tflow's client connection is a TLS one
    cors.requestheaders(secure)
    assert secure.response is None


@pytest.mark.parametrize(
    ("method", "site", "refused"),
    [
        ("POST", "cross-site", True),
        ("POST", "same-site", True),
        ("DELETE", "Cross-Site", True),
        ("POST", "same-origin", False),
        ("POST", "none", False),
        ("POST", None, False),  # not a browser, or an old one: content_type still applies
        ("GET", "cross-site", False),  # a link or an image changes nothing
        ("HEAD", "cross-site", False),
    ],
)
def test_sec_fetch_site_without_origin(
    tmp_path: Path, method: str, site: str | None, refused: bool
) -> None:
    config = loaded(SECURITY, tmp_path)
    target = flow(
        config, method, "/v1/chat/completions", headers={"sec-fetch-site": site} if site else {}
    )
    cors = Cors()
    configure(config, cors)
    cors.requestheaders(target)
    assert _refused(target) is refused


def test_an_answered_flow_is_left_alone(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    target = flow(
        config, "POST", "/v1/chat/completions", headers={"origin": "https://evil.example"}
    )
    target.response = http.Response.make(429)
    cors = Cors()
    configure(config, cors)
    cors.requestheaders(target)
    assert target.response.status_code == 429


def test_no_same_origin_for_a_host_only_star_accepts(tmp_path: Path) -> None:
    base = BASE.replace("auth: none}", 'auth: none, hosts: ["*"]}')
    config = loaded("", tmp_path, base=base)
    rebound = _request(
        config,
        "http://rebind.attacker.example:8089",
        port=8089,
        headers={"host": "rebind.attacker.example:8089"},
    )
    assert _refused(rebound)
    assert not _refused(_request(config, "http://127.0.0.1:8089", port=8089))
