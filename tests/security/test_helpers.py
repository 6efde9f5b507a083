"""Pure helpers: credential parsing, address sets, canonical paths, buckets."""

from __future__ import annotations

import ipaddress

import pytest
from mitmproxy.http import Headers

from flm_gateway.core.netset import NetworkMap, parse_ip
from flm_gateway.core.paths import canonical_path, path_matches
from flm_gateway.security.keys import (
    CredentialProblem,
    generate_secret,
    hash_secret,
    hashes_match,
    presented_secret,
)
from flm_gateway.security.ratelimit import Bucket, format_reset


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers([(k.encode(), v.encode()) for k, v in pairs])


def test_secrets_are_random_and_hashed() -> None:
    a, b = generate_secret(), generate_secret()
    assert a != b and a.startswith("flm-") and len(a) >= 4 + 43
    assert hash_secret(a).startswith("sha256:") and len(hash_secret(a)) == 7 + 64
    assert hashes_match(hash_secret(a), hash_secret(a))
    assert not hashes_match(hash_secret(a), hash_secret(b))


@pytest.mark.parametrize(
    ("pairs", "secret", "problem"),
    [
        ((("authorization", "Bearer abc"),), "abc", None),
        ((("authorization", "bearer   abc "),), "abc", None),
        ((("x-api-key", "abc"),), "abc", None),
        ((("authorization", "Bearer abc"), ("x-api-key", "abc")), "abc", None),
        ((), None, CredentialProblem.MISSING),
        ((("authorization", "Basic YWJjOg=="),), None, CredentialProblem.MALFORMED),
        ((("authorization", "Bearer a b"),), None, CredentialProblem.MALFORMED),
        ((("authorization", "Bearer"),), None, CredentialProblem.MALFORMED),
        (
            (("authorization", "Bearer a"), ("authorization", "Bearer b")),
            None,
            CredentialProblem.AMBIGUOUS,
        ),
        (
            (("authorization", "Bearer a"), ("authorization", "Bearer a")),
            None,
            CredentialProblem.AMBIGUOUS,
        ),
        ((("x-api-key", "a"), ("x-api-key", "b")), None, CredentialProblem.AMBIGUOUS),
        ((("authorization", "Bearer a"), ("x-api-key", "b")), None, CredentialProblem.AMBIGUOUS),
        ((("x-api-key", "a\x01b"),), None, CredentialProblem.MALFORMED),
    ],
)
def test_presented_secret_is_strict(
    pairs: tuple[tuple[str, str], ...], secret: str | None, problem: CredentialProblem | None
) -> None:
    presented = presented_secret(headers(*pairs))
    assert (presented.secret, presented.problem) == (secret, problem)


def test_network_map_longest_prefix_and_ipv4_mapped() -> None:
    networks = NetworkMap([("10.0.0.0/8", "wide"), ("10.1.2.0/24", "narrow"), ("::1", "v6")])
    assert networks.lookup(ipaddress.ip_address("10.1.2.3")) == ("10.1.2.0/24", "narrow")
    assert networks.lookup(ipaddress.ip_address("10.9.9.9")) == ("10.0.0.0/8", "wide")
    assert networks.lookup(ipaddress.ip_address("11.0.0.1")) is None
    mapped = parse_ip("::ffff:10.1.2.3")
    assert mapped is not None and mapped in networks and str(mapped) == "10.1.2.3"
    assert parse_ip("::1") in networks and parse_ip("::2") not in networks
    assert sorted(cidr for cidr, _ in networks.lookup_all(ipaddress.ip_address("10.1.2.3"))) == [
        "10.0.0.0/8",
        "10.1.2.0/24",
    ]
    everything = NetworkMap([("0.0.0.0/0", True)])
    assert parse_ip("203.0.113.9") in everything
    assert networks.remove("10.1.2.0/24") and not networks.remove("10.1.2.0/24")
    assert parse_ip("not-an-ip") is None


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/.env", "/.env"),
        ("/%2e%65nv", "/.env"),
        ("/%252e%2565nv", "/.env"),
        ("//.ENV", "/.env"),
        ("/x/../.env?a=b", "/.env"),
        ("/v1/./models", "/v1/models"),
        ("\\wp-admin\\", "/wp-admin"),
        ("/wp-admin;jsessionid=1/x", "/wp-admin/x"),
        ("/../../..", "/"),
    ],
)
def test_canonical_path(raw: str, canonical: str) -> None:
    assert canonical_path(raw) == canonical


def test_path_matches_at_segment_boundaries() -> None:
    assert path_matches("/.env", "/.env")
    assert path_matches("/app/.env", "/.env")
    assert path_matches("/.git/config", "/.git")
    assert path_matches("/wp-admin/install.php", "/wp-admin")
    assert not path_matches("/.envelope", "/.env")
    assert not path_matches("/v1/models", "/models-x")


def test_bucket_exact_and_refills() -> None:
    bucket = Bucket.per_minute(60, 3, now=0.0)
    taken = 0
    for _ in range(10):
        if bucket.can_take(1.0, 0.0):
            bucket.take(1.0)
            taken += 1
    assert taken == 3 and bucket.remaining() == 0
    assert bucket.seconds_until(1.0) == pytest.approx(1.0)
    assert not bucket.can_take(1.0, 0.5) and bucket.can_take(1.0, 1.0)
    assert bucket.reset_seconds() == pytest.approx(2.0, abs=0.01)
    debt = Bucket.per_minute(600, None, now=0.0)
    debt.take(1000.0)
    assert not debt.admits(0.0) and debt.admits(41.0)
    assert [format_reset(s) for s in (0.02, 1, 59.5, 360, 3723)] == [
        "20ms",
        "1s",
        "1m0s",
        "6m0s",
        "1h2m3s",
    ]
