"""Auth-bypass attempts against the real gateway, as raw bytes over a socket.

Every spelling, protocol version, request-target form and header trick below
must fail to reach the model list without a valid key: the answer is never a
200 carrying `/v1/models` data (and never a decoy mistaken for it). Each attempt
comes from its own 127.0.1.N address, so an attempt that trips auto-block does
not decide the next one. The positive controls prove the raw client itself works.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator

import pytest

from tests.support.security_stack import SecurityStack, security_stack

_sources = (f"127.0.1.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityStack]:
    with security_stack(tmp_path_factory.mktemp("bypass")) as running:
        yield running


@pytest.fixture(scope="module")
def key(stack: SecurityStack) -> str:
    secret = stack.new_key("bypass-control", "--rpm", "1000")
    stack.settle()
    return secret


def send(stack: SecurityStack, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send `head` (CRLF line endings added, {port} filled) and return (status, raw answer)."""
    request = head.replace("{port}", str(stack.port)).replace("\n", "\r\n").encode() + body
    answer = stack.raw(request, source=next(_sources))
    status_line = answer.split(b"\r\n", 1)[0]
    parts = status_line.split()
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), answer


def leaked(answer: bytes) -> bool:
    return b'"object": "list"' in answer or b'"tiny-a"' in answer


def test_positive_controls(stack: SecurityStack, key: str) -> None:
    status, answer = send(
        stack,
        f"GET /v1/models HTTP/1.1\nHost: 127.0.0.1:{{port}}\nAuthorization: Bearer {key}\n"
        "Connection: close\n\n",
    )
    assert status == 200 and leaked(answer)
    status, answer = send(stack, f"GET /v1/models HTTP/1.0\nx-api-key: {key}\n\n")
    assert status == 200 and leaked(answer)
    status, _ = send(stack, "GET /healthz HTTP/1.1\nHost: 127.0.0.1:{port}\nConnection: close\n\n")
    assert status == 200


TARGETS = [
    "/v1/models",
    "//v1/models",
    "///v1/models",
    "/V1/MODELS",
    "/v1/Models",
    "/v1/./models",
    "/./v1/models",
    "/v1//models",
    "/v1/models/",
    "/v1/%6dodels",
    "/%76%31/models",
    "/v1/%2e%2e/v1/models",
    "/v1/%2E%2E/v1/models",
    "/v1/%252e%252e/v1/models",
    "/v1/x/../models",
    "/healthz/../v1/models",
    "/healthz/%2e%2e/v1/models",
    "/healthz%2f..%2fv1/models",
    "/healthz%2F%2E%2E%2Fv1%2Fmodels",
    "/healthz;/../v1/models",
    "/healthz?/../v1/models",
    "/healthz#/v1/models",
    "/readyz/..;/v1/models",
    "/v1/models%00",
    "/v1/models%2f",
    "/v1/models?api_key=flm-guess",
    "/v1\\models",
    "/v1/models;.css",
    "http://127.0.0.1:{port}/v1/models",
    "http://127.0.0.1:{port}//v1/models",
    "http://localhost/v1/models",
    "http://127.0.0.1:{port}/healthz/../v1/models",
    "*",
]


@pytest.mark.parametrize("target", TARGETS)
def test_request_targets_without_a_key(stack: SecurityStack, key: str, target: str) -> None:
    for version in ("HTTP/1.1", "HTTP/1.0"):
        host = "Host: 127.0.0.1:{port}\n" if version == "HTTP/1.1" else ""
        status, answer = send(stack, f"GET {target} {version}\n{host}Connection: close\n\n")
        assert status != 200 and not leaked(answer), (target, version, answer[:200])


HEADER_TRICKS = [
    # duplicate and conflicting credentials: the valid key alone would pass
    "Authorization: Bearer {key}\nAuthorization: Bearer flm-wrong\n",
    "Authorization: Bearer flm-wrong\nAuthorization: Bearer {key}\n",
    "Authorization: Bearer {key}\nAuthorization: Bearer {key}\n",
    "Authorization: Bearer {key}, Bearer flm-wrong\n",
    "Authorization: Bearer {key}\nx-api-key: flm-wrong\n",
    "x-api-key: {key}\nx-api-key: flm-wrong\n",
    "Authorization: Basic {basic}\n",
    "Authorization: Token {key}\n",
    "Authorization: {key}\n",
    "Authorization: Bearer\n",
    "Authorization: Bearer {key}x\n",
    "Authorization: Bearer {prefix}\n",
    "Proxy-Authorization: Bearer {key}\n",
    "Cookie: api_key={key}\n",
    # host and routing header games
    "Host: localhost\n",
    "Host: 127.0.0.1:{port}\nHost: evil.example\n",
    "Host: evil.example\nX-Forwarded-Host: 127.0.0.1\n",
    "X-Forwarded-For: 127.0.0.1\nX-Real-IP: 127.0.0.1\n",
    "X-Original-URL: /healthz\n",
    "X-Rewrite-URL: /healthz\n",
    "X-Forwarded-Prefix: /healthz\n",
    "X-HTTP-Method-Override: OPTIONS\nOrigin: https://app.example.com\n",
]


@pytest.mark.parametrize("trick", HEADER_TRICKS)
def test_header_tricks(stack: SecurityStack, key: str, trick: str) -> None:
    basic = base64.b64encode(f"{key}:".encode()).decode()
    headers = trick.format(key=key, basic=basic, prefix=key[:-1], port=stack.port)
    if not headers.lower().startswith("host:"):
        headers = "Host: 127.0.0.1:{port}\n" + headers
    status, answer = send(stack, f"GET /v1/models HTTP/1.1\n{headers}Connection: close\n\n")
    assert status != 200 and not leaked(answer), (trick, answer[:200])


def test_methods_pipelining_smuggling_and_expect(stack: SecurityStack, key: str) -> None:
    for method in ("HEAD", "POST", "OPTIONS", "PUT", "DELETE", "TRACE", "get"):
        status, answer = send(
            stack,
            f"{method} /v1/models HTTP/1.1\nHost: 127.0.0.1:{{port}}\nContent-Length: 0\n"
            "Connection: close\n\n",
        )
        assert status != 200 and not leaked(answer), method
    status, answer = send(stack, "CONNECT 127.0.0.1:{port} HTTP/1.1\nHost: 127.0.0.1:{port}\n\n")
    assert status != 200 and not leaked(answer)
    # A health check first on the same connection must not vouch for the next request.
    status, answer = send(
        stack,
        "GET /healthz HTTP/1.1\nHost: 127.0.0.1:{port}\n\n"
        "GET /v1/models HTTP/1.1\nHost: 127.0.0.1:{port}\nConnection: close\n\n",
    )
    assert status == 200 and b" 401 " in answer and not leaked(answer)
    # A keyed request does not authenticate the next one on the same connection.
    status, answer = send(
        stack,
        f"GET /v1/models HTTP/1.1\nHost: 127.0.0.1:{{port}}\nx-api-key: {key}\n\n"
        "GET /v1/models HTTP/1.1\nHost: 127.0.0.1:{port}\nConnection: close\n\n",
    )
    assert status == 200 and answer.count(b'"object": "list"') == 1 and b" 401 " in answer
    smuggled = (
        "POST /healthz HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Length: 44\n"
        "Transfer-Encoding: chunked\n\n"
        "0\n\nGET /v1/models HTTP/1.1\nHost: 127.0.0.1:{port}\n\n"
    )
    status, answer = send(stack, smuggled)
    assert not leaked(answer)
    status, answer = send(
        stack,
        "POST /v1/chat/completions HTTP/1.1\nHost: 127.0.0.1:{port}\nExpect: 100-continue\n"
        "Content-Type: application/json\nContent-Length: 2\nConnection: close\n\n",
        b"{}",
    )
    assert b" 401 " in answer and b" 200 " not in answer
