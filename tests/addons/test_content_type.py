"""content_type: a body is read as JSON only when it says it is JSON (415 otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import http

from flm_gateway.addons.content_type import ContentType, body_and_types, is_json, media_type
from flm_gateway.config import LoadedConfig
from flm_gateway.proxy.flow_meta import SECURITY_REJECTED
from tests.support.flows import error_of
from tests.support.security import flow, loaded


@pytest.mark.parametrize(
    ("value", "json"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        (" application/json ;", True),
        ("application/vnd.api+json", True),
        ("application/problem+JSON; q=1", True),
        ("application/+json", False),
        ("application/json-seq", False),
        ("application/jsonp", False),
        ("application/x-json", False),
        ("text/json", False),
        ("text/plain", False),
        ("text/plain; x=application/json", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/json, text/plain", False),
        ("application", False),
        ("", False),
        ("json", False),
    ],
)
def test_json_media_types(value: str, json: bool) -> None:
    assert is_json(media_type(value.encode())) is json


@pytest.fixture
def config(tmp_path: Path) -> LoadedConfig:
    return loaded("", tmp_path)


def check(config: LoadedConfig, target: http.HTTPFlow) -> int | None:
    ContentType().requestheaders(target)
    if target.response is None:
        return None
    status, error = error_of(target)
    assert error["code"] == "unsupported_media_type"
    assert SECURITY_REJECTED.require(target) == "content_type"
    return status


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([(b"Content-Type", b"application/json"), (b"Content-Length", b"2")], None),
        ([(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")], 415),
        ([(b"Content-Length", b"2")], 415),  # no type: a fetch() with a Blob body
        ([(b"Content-Type", b"text/plain"), (b"Transfer-Encoding", b"chunked")], 415),
        ([(b"Content-Type", b"text/plain"), (b"Content-Length", b"0")], None),  # no body
        ([(b"Content-Type", b"text/plain")], None),
        (
            [
                (b"Content-Type", b"application/json"),
                (b"Content-Type", b"text/plain"),
                (b"Content-Length", b"2"),
            ],
            415,
        ),
    ],
)
def test_bodies_must_declare_json(
    config: LoadedConfig, fields: list[tuple[bytes, bytes]], status: int | None
) -> None:
    target = flow(config, "POST", "/v1/chat/completions")
    target.request.headers.fields = ((b"Host", b"127.0.0.1:8088"), *fields)
    assert check(config, target) == status


def test_uploads_take_multipart_only(config: LoadedConfig) -> None:
    for content_type, status in (
        (b"multipart/form-data; boundary=x", None),
        (b"application/json", 415),
        (b"text/plain", 415),
    ):
        for path in ("/v1/audio/transcriptions", "/v1/audio/translations?x=1"):
            target = flow(config, "POST", path)
            target.request.headers.fields = (
                (b"Content-Type", content_type),
                (b"Content-Length", b"10"),
            )
            assert check(config, target) == status, (path, content_type)
    target = flow(config, "POST", "/v1/chat/completions")
    target.request.headers.fields = (
        (b"Content-Type", b"multipart/form-data; boundary=x"),
        (b"Content-Length", b"10"),
    )
    assert check(config, target) == 415


def test_body_and_types() -> None:
    def read(*fields: tuple[bytes, bytes]) -> tuple[bool, list[bytes]]:
        made = http.Request.make("POST", "http://127.0.0.1/x")
        made.headers.fields = fields
        return body_and_types(made)

    assert read() == (False, [])
    assert read((b"Content-Length", b"0")) == (False, [])
    assert read((b"Content-Length", b"00")) == (True, [])  # refuse what reads two ways
    assert read((b"content-length", b"1"), (b"CONTENT-TYPE", b"a/b")) == (True, [b"a/b"])
    assert read((b"Transfer-Encoding", b"chunked")) == (True, [])
    assert read((b"X-Content-Type", b"a"), (b"Content-Typo", b"b")) == (False, [])


def test_answered_and_orphan_flows_are_left_alone(config: LoadedConfig) -> None:
    answered = flow(config, "POST", "/v1/chat/completions", headers={"content-length": "2"})
    answered.response = http.Response.make(401)
    ContentType().requestheaders(answered)
    assert answered.response.status_code == 401
    orphan = flow(config, "POST", "/v1/chat/completions", port=9999)
    orphan.request.headers["content-length"] = "2"
    ContentType().requestheaders(orphan)
    assert orphan.response is None
