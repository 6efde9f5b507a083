"""cors: preflights answered by the gateway; headers only for allowed origins."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import http

from flm_gateway.addons.cors import Cors
from tests.support.security import flow, loaded, run_hooks

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
    cors.apply_config(config)
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
    cors.apply_config(config)

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
    cors.apply_config(config)
    target = _preflight(config, "https://app.example.com")
    await run_hooks([cors], target, ("requestheaders", "responseheaders"))
    assert target.response is not None and target.response.status_code == 403


async def test_star_with_and_without_credentials(tmp_path: Path) -> None:
    config = loaded('cors: {allow_origins: ["*"]}', tmp_path)
    cors = Cors()
    cors.apply_config(config)
    target = _preflight(config, "https://anything.test")
    await run_hooks([cors], target, ("requestheaders", "responseheaders"))
    assert target.response is not None
    assert target.response.headers["access-control-allow-origin"] == "*"
