from __future__ import annotations

import pytest

from flm_gateway.tls.acme_challenges import ChallengeTokens, RedirectTarget, redirect_location

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
