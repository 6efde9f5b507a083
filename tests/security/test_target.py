"""The canonical request target: a table of targets and what each becomes or why it is refused."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest

from flm_gateway.security.target import (
    EXPLANATIONS,
    Refusal,
    TargetRefused,
    canonical_target,
)

CANONICAL = [
    # already canonical: returned as is
    ("/", "/"),
    ("/api/chat", "/api/chat"),
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/api/blobs/sha256:0123abcd", "/api/blobs/sha256:0123abcd"),
    ("/a-b_c.d~e/f!$&'()*+,=:@", "/a-b_c.d~e/f!$&'()*+,=:@"),
    ("/v1/models/", "/v1/models/"),
    ("/.well-known/x", "/.well-known/x"),
    ("/...", "/..."),
    ("/a/.b/..c", "/a/.b/..c"),
    # unreserved escapes decoded once, any hex case
    ("/api/%70ull", "/api/pull"),
    ("/%61pi/pull", "/api/pull"),
    ("/%61%70%69/%70%75%6C%6C", "/api/pull"),
    ("/%61%70%69/%70%75%6c%6c", "/api/pull"),
    ("/v1/%63hat/completions", "/v1/chat/completions"),
    ("/%68ealthz", "/healthz"),
    ("/a/%7e%41%2D%5f%2E%30", "/a/~A-_.0"),
    ("/a/%2e%2e%2e", "/a/..."),
    ("/a/.%2ex", "/a/..x"),
    # other escapes stay encoded, upper-case hex
    ("/a/%3a", "/a/%3A"),
    ("/a/%3A", "/a/%3A"),
    ("/a/%20b", "/a/%20b"),
    ("/a/%3f%23%3b", "/a/%3F%23%3B"),
    ("/a/%c3%a9", "/a/%C3%A9"),
    ("/a/%F0%9F%98%80", "/a/%F0%9F%98%80"),
    # repeated slashes and raw dot segments resolved (RFC 3986 5.2.4)
    ("//api/pull", "/api/pull"),
    ("/api//pull", "/api/pull"),
    ("///api///pull///", "/api/pull/"),
    ("//", "/"),
    ("/api/./pull", "/api/pull"),
    ("/./api/pull", "/api/pull"),
    ("/x/../api/pull", "/api/pull"),
    ("/../api/pull", "/api/pull"),
    ("/../../..", "/"),
    ("/api/pull/.", "/api/pull/"),
    ("/api/pull/x/..", "/api/pull/"),
    ("/healthz/../v1/models", "/v1/models"),
    ("/v1/x/./../models", "/v1/models"),
    # the query is forwarded byte for byte, decoded path or not
    ("/v1/models?x=1", "/v1/models?x=1"),
    ("/api/%70ull?x=%2F&y=a+b", "/api/pull?x=%2F&y=a+b"),
    ("/a?", "/a?"),
    ("/a?b?c=/../d", "/a?b?c=/../d"),
    ("/a?q=%25%2e%2E%5c\\|{}", "/a?q=%25%2e%2E%5c\\|{}"),
    ("/slots/0?action=save", "/slots/0?action=save"),
]

REFUSED = [
    # encoded slash and backslash, any case
    ("/api%2Fpull", Refusal.ENCODED_SLASH),
    ("/api%2fpull", Refusal.ENCODED_SLASH),
    ("/%2Fapi/pull", Refusal.ENCODED_SLASH),
    ("/v1/models%2f", Refusal.ENCODED_SLASH),
    ("/healthz%2F%2E%2E%2Fv1%2Fmodels", Refusal.ENCODED_SLASH),
    ("/api%5Cpull", Refusal.BACKSLASH),
    ("/api%5cpull", Refusal.BACKSLASH),
    ("/api\\pull", Refusal.BACKSLASH),
    ("/v1\\models", Refusal.BACKSLASH),
    # double encodings
    ("/api/%2570ull", Refusal.ENCODED_PERCENT),
    ("/v1/%252e%252e/v1/models", Refusal.ENCODED_PERCENT),
    ("/a/100%25", Refusal.ENCODED_PERCENT),
    ("/api%252Fpull", Refusal.ENCODED_PERCENT),
    # encoded dot segments
    ("/api/%2e/pull", Refusal.ENCODED_DOT_SEGMENT),
    ("/api/%2E%2E/pull", Refusal.ENCODED_DOT_SEGMENT),
    ("/x/%2e%2e/api/pull", Refusal.ENCODED_DOT_SEGMENT),
    ("/x/.%2e/api/pull", Refusal.ENCODED_DOT_SEGMENT),
    ("/x/%2e./api/pull", Refusal.ENCODED_DOT_SEGMENT),
    ("/api/pull/%2e", Refusal.ENCODED_DOT_SEGMENT),
    ("/healthz/%2e%2e/v1/models", Refusal.ENCODED_DOT_SEGMENT),
    # NUL and other controls, raw or encoded
    ("/api/pull%00", Refusal.CONTROL_CHARACTER),
    ("/api/pull%00.json", Refusal.CONTROL_CHARACTER),
    ("/api/pull%0a", Refusal.CONTROL_CHARACTER),
    ("/api/pull%0D%0ASet-Cookie:x", Refusal.CONTROL_CHARACTER),
    ("/api/pull%1f", Refusal.CONTROL_CHARACTER),
    ("/api/pull%7F", Refusal.CONTROL_CHARACTER),
    ("/api/pull\x00", Refusal.CONTROL_CHARACTER),
    ("/api/pull\x01", Refusal.CONTROL_CHARACTER),
    # path parameters (Tomcat-style)
    ("/api/pull;x", Refusal.PATH_PARAMETER),
    ("/api;/pull", Refusal.PATH_PARAMETER),
    ("/healthz;/../v1/models", Refusal.PATH_PARAMETER),
    ("/readyz/..;/v1/models", Refusal.PATH_PARAMETER),
    ("/v1/models;.css", Refusal.PATH_PARAMETER),
    # malformed escapes
    ("/api/pull%", Refusal.MALFORMED_ESCAPE),
    ("/api/pull%4", Refusal.MALFORMED_ESCAPE),
    ("/api/pull%G0", Refusal.MALFORMED_ESCAPE),
    ("/api/pull%0G", Refusal.MALFORMED_ESCAPE),
    ("/api/%%70ull", Refusal.MALFORMED_ESCAPE),
    ("/api/%u0070ull", Refusal.MALFORMED_ESCAPE),
    ("/a/%+1", Refusal.MALFORMED_ESCAPE),
    # encoded bytes that are not UTF-8 (overlong '.', lone continuation, truncated, surrogate)
    ("/a/%C0%AE", Refusal.INVALID_UTF8),
    ("/a/%c0%ae%c0%ae/api/pull", Refusal.INVALID_UTF8),
    ("/a/%E0%80%AE", Refusal.INVALID_UTF8),
    ("/a/%80", Refusal.INVALID_UTF8),
    ("/a/%C3", Refusal.INVALID_UTF8),
    ("/a/%ED%A0%80", Refusal.INVALID_UTF8),
    ("/a/%FF", Refusal.INVALID_UTF8),
    # raw characters that clients must encode, a fragment, non-ASCII
    ("/v1/models#x", Refusal.INVALID_CHARACTER),
    ("/healthz#/v1/models", Refusal.INVALID_CHARACTER),
    ("/a/b c", Refusal.INVALID_CHARACTER),
    ('/a/"b"', Refusal.INVALID_CHARACTER),
    ("/a/<b>", Refusal.INVALID_CHARACTER),
    ("/a/{b}|^`", Refusal.INVALID_CHARACTER),
    ("/a/[b]", Refusal.INVALID_CHARACTER),
    ("/api/pu\u0131l", Refusal.INVALID_CHARACTER),
    ("/api/\udcc0\udcaepull", Refusal.INVALID_CHARACTER),
    ("/\uff0fapi", Refusal.INVALID_CHARACTER),
    # not a path at all
    ("*", Refusal.NOT_A_PATH),
    ("", Refusal.NOT_A_PATH),
    ("api/pull", Refusal.NOT_A_PATH),
    ("?x=1", Refusal.NOT_A_PATH),
    # the query: malformed escapes, NUL, fragments, raw bytes outside visible ASCII
    ("/v1/models?x=%00", Refusal.INVALID_QUERY),
    ("/v1/models?x=%zz", Refusal.INVALID_QUERY),
    ("/v1/models?x=%", Refusal.INVALID_QUERY),
    ("/v1/models?x=%4", Refusal.INVALID_QUERY),
    ("/v1/models?x=1#y", Refusal.INVALID_QUERY),
    ("/v1/models?x=\x00", Refusal.INVALID_QUERY),
    ("/v1/models?x=\x7f", Refusal.INVALID_QUERY),
    ("/v1/models?x=\u00e9", Refusal.INVALID_QUERY),
    # query checked even when the path is fine, path checked even when the query is
    ("/api/%70ull?x=%00", Refusal.INVALID_QUERY),
    ("/api%2Fpull?x=1", Refusal.ENCODED_SLASH),
]


@pytest.mark.parametrize(("target", "expected"), CANONICAL)
def test_canonical_forms(target: str, expected: str) -> None:
    assert canonical_target(target) == expected


@pytest.mark.parametrize(("target", "reason"), REFUSED)
def test_refusals(target: str, reason: Refusal) -> None:
    with pytest.raises(TargetRefused) as refused:
        canonical_target(target)
    assert refused.value.reason is reason


@pytest.mark.parametrize(("target", "_expected"), CANONICAL)
def test_canonical_is_a_fixed_point(target: str, _expected: str) -> None:
    """Canonicalising twice changes nothing: the engine-side decoding is the only one left."""
    once = canonical_target(target)
    assert canonical_target(once) == once


UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


@pytest.mark.parametrize(("target", "_expected"), CANONICAL)
def test_the_engine_decodes_the_canonical_form_to_a_clean_path(target: str, _expected: str) -> None:
    """What an engine routes on (every escape decoded once) has no dot segment, no empty
    segment but a trailing one, no `/` or `\\` born of an escape; the escapes left are of
    characters no route name contains."""
    path = canonical_target(target).partition("?")[0]
    decoded = unquote_to_bytes(path).decode("utf-8")
    segments = decoded.split("/")[1:]
    assert all(segment not in (".", "..") for segment in segments)
    assert all(segments[:-1])
    assert decoded.count("/") == path.count("/")
    assert "\\" not in decoded
    escapes = [int(code, 16) for code in re.findall(r"%([0-9A-Fa-f]{2})", path)]
    assert all(byte not in UNRESERVED for byte in escapes)
    assert re.findall(r"%[0-9A-Fa-f]{2}", path) == re.findall(r"%[0-9A-F]{2}", path)


def test_every_refusal_has_a_client_message() -> None:
    assert set(EXPLANATIONS) == set(Refusal)


def test_length_is_not_refused_here() -> None:
    # The HTTP layer bounds the request line (server.limits.max_url_length), once.
    longest = "/" + "a" * 20_000
    assert canonical_target(longest) == longest
    assert canonical_target(longest + "?" + "a" * 20_000) == longest + "?" + "a" * 20_000


@pytest.mark.parametrize(
    "target",
    [
        "/" + "%2e%2e/" * 1200,
        "/" + "a/" * 4000,
        "/" + "./" * 4000,
        "/" + "%41" * 2700,
        "/a?" + "%41" * 2700,
        "/" + "a" * 4000 + "%",
    ],
)
def test_long_adversarial_targets_are_decided(target: str) -> None:
    """Near the length bound, the worst spellings still get an answer (a pass each)."""
    try:
        result = canonical_target(target)
    except TargetRefused as refused:
        assert refused.reason in Refusal
    else:
        assert result.startswith("/")
