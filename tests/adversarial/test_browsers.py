"""Class 8: browsers cannot drive a keyless loopback listener (DNS rebinding, cross-site).

The gateway under test has keyless loopback listeners in front of a recording Ollama:
`open` (the OpenAI API), `dropin` (passthrough) and `named` (its own `hosts:` and a CORS
origin). Three defences, each with the variants an attacker would try:
- Host (DNS rebinding): only names of the listener pass; others 421, malformed ones 400;
  the engine always gets its own Host, once.
- Origin: a request from an origin CORS does not allow is 403 before anything else,
  same-origin passes, `null` never does.
- Content type: a body is read as JSON only when it says so (415), also in passthrough.
For every refusal the engine saw nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    request,
    sources,
)
from tests.support.gateway_process import free_port
from tests.support.recording_engine import RecordingEngine

CONFIG = """\
server: {state_dir: "{state_dir}"}
admin: {enabled: false}
listeners:
  - {name: open, bind: "127.0.0.1:{port}", auth: none}
  - {name: dropin, bind: "127.0.0.1:DROPIN", auth: none, passthrough: engine}
  - name: named
    bind: "127.0.0.1:NAMED"
    auth: none
    hosts: [Gateway.Example.Test, "*.lan.example"]
    security: {cors: {allow_origins: ["https://app.example.test"]}}
engines:
  - {name: engine, kind: ollama, url: "ENGINE_URL"}
"""
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
_source = sources(81)


@dataclass
class Browsers:
    engine: RecordingEngine
    open: int
    dropin: int
    named: int

    def send(self, port: int, data: bytes) -> Answer:
        self.engine.clear()
        return exchange(port, data, source=next(_source))

    def chat(self, headers: list[tuple[str, str]], port: int | None = None) -> Answer:
        """POST a JSON chat to `open` (or `port`) with exactly `headers` (Host included)."""
        return self.send(
            port or self.open,
            request("POST", "/v1/chat/completions", headers=headers, json_body=CHAT),
        )

    def refused(self, answer: Answer, status: int, code: str) -> None:
        assert_openai_error(answer, status, code=code)
        assert self.engine.calls() == [], [s.raw_head for s in self.engine.calls()]

    def reached(self, answer: Answer, path: str, *, status: int = 200) -> None:
        """The answer is the engine's, which saw exactly one request, with its own Host."""
        assert answer.status == status, (answer.status, answer.body[:300])
        (seen,) = self.engine.calls()
        assert seen.path == path
        assert seen.header_values("host") == [f"127.0.0.1:{self.engine.port}"], seen.raw_head


@pytest.fixture(scope="module")
def browsers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browsers]:
    dropin, named = free_port(), free_port()
    config = CONFIG.replace("DROPIN", str(dropin)).replace("NAMED", str(named))
    with (
        RecordingEngine(kind="ollama") as engine,
        gateway_before(engine, tmp_path_factory.mktemp("browsers"), config) as gateway,
    ):
        yield Browsers(engine, int(gateway.url.rsplit(":", 1)[1]), dropin, named)


# ---- Host: DNS rebinding ------------------------------------------------------------

MISDIRECTED = [
    "rebind.attacker.example:{port}",
    "rebind.attacker.example",
    "REBIND.Attacker.Example:{port}",
    "rebind.attacker.example.:{port}",
    "localhost.attacker.example:{port}",
    "127.0.0.1.nip.io:{port}",
    "sub.localhost:{port}",
    "localhost.localdomain:{port}",
    "127.0.0.2:{port}",  # another loopback address: not this listener's
    "[::1]:{port}",  # the other family: not this listener's socket
    "[::ffff:127.0.0.1]:{port}",
    "0.0.0.0:{port}",
    "xn--80ak6aa92e.com:{port}",
    "gateway.example.test:{port}",  # another listener's name
]


@pytest.mark.parametrize("host", MISDIRECTED)
def test_a_host_that_does_not_name_the_listener_is_421(browsers: Browsers, host: str) -> None:
    answer = browsers.chat([("Host", host.format(port=browsers.open))])
    browsers.refused(answer, 421, "misdirected_request")


MALFORMED = [
    "127.0.0.1:{port}\r\nHost: rebind.attacker.example",  # two Host headers
    "rebind.attacker.example\r\nHost: 127.0.0.1:{port}",
    "127.0.0.1:{port}, rebind.attacker.example",
    "user@127.0.0.1:{port}",
    "127.0.0.1:{port}@rebind.attacker.example",
    "127.0.0.1:{port}/x",
    "127.0.0.1:",
    "127.0.0.1:0",
    "127.0.0.1:99999",
    "127.0.0.1:+80",
    "127.1:{port}",
    "2130706433:{port}",
    "0x7f.0.0.1:{port}",
    "127.000.0.1:{port}",
    "127.0.0.01:{port}",
    "::1:{port}",
    "[::1%25lo]:{port}",
    "[fe80::1%eth0]:{port}",
    "%6cocalhost:{port}",
    "local host:{port}",
    "localhost..:{port}",
    ".localhost:{port}",
    "",
    "l\u043ecalhost:{port}",  # a Cyrillic o
]


@pytest.mark.parametrize("host", MALFORMED)
def test_a_malformed_host_is_400(browsers: Browsers, host: str) -> None:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host.format(port=browsers.open)}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    answer = browsers.send(browsers.open, head.encode("utf-8"))
    browsers.refused(answer, 400, "invalid_host")


def test_http_1_1_without_host_is_400_and_http_1_0_names_nothing(browsers: Browsers) -> None:
    body = b'{"model": "tiny", "messages": []}'
    for version, status in ((b"HTTP/1.1", 400), (b"HTTP/1.0", 200)):
        head = b"POST /v1/chat/completions %s\r\nContent-Type: application/json\r\n" % version
        answer = browsers.send(
            browsers.open, head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        if status == 400:
            browsers.refused(answer, 400, "invalid_host")
        else:
            browsers.reached(answer, "/v1/chat/completions")


def test_absolute_form_targets_name_the_host(browsers: Browsers) -> None:
    port = browsers.open
    own = f"127.0.0.1:{port}"
    cases = [
        (f"http://rebind.attacker.example:{port}/v1/models", own, 400, "host_mismatch"),
        (f"http://rebind.attacker.example:{port}/v1/models", None, 421, "misdirected_request"),
        (
            f"http://rebind.attacker.example:{port}/v1/models",
            f"rebind.attacker.example:{port}",
            421,
            "misdirected_request",
        ),
        (f"http://{own}/v1/models", f"rebind.attacker.example:{port}", 400, "host_mismatch"),
        (f"http://{own}/v1/models", "localhost", 400, "host_mismatch"),
        (f"http://{own}:1/v1/models", own, 400, "invalid_http"),  # mitmproxy refuses it
        (f"http://user@{own}/v1/models", own, 400, "invalid_http"),
    ]
    for target, host, status, code in cases:
        head = f"GET {target} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "")
        answer = browsers.send(port, (head + "Connection: close\r\n\r\n").encode())
        browsers.refused(answer, status, code)
    # The same target with a matching Host is served (the gateway answers /v1/models).
    answer = browsers.send(
        port, f"GET http://{own}/v1/models HTTP/1.1\r\nHost: {own}\r\n\r\n".encode()
    )
    assert answer.status == 200 and answer.json["object"] == "list"


ACCEPTED = [
    "127.0.0.1:{port}",
    "127.0.0.1",
    "127.0.0.1:8443",  # the port is not compared: port forwards change it
    "localhost:{port}",
    "LocalHost:{port}",
    "localhost.:{port}",
    "localhost",
]


@pytest.mark.parametrize("host", ACCEPTED)
def test_names_of_the_listener_reach_the_engine_with_its_own_host(
    browsers: Browsers, host: str
) -> None:
    answer = browsers.chat([("Host", host.format(port=browsers.open))])
    browsers.reached(answer, "/v1/chat/completions")


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("gateway.example.test:{port}", 200),
        ("GATEWAY.example.test.", 200),
        ("a.lan.example:{port}", 200),
        ("a.b.lan.example", 200),
        ("lan.example:{port}", 421),  # *.domain is subdomains only
        ("xlan.example", 421),
        ("gateway.example.test.evil.example", 421),
        ("evil-gateway.example.test", 421),
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
    ],
)
def test_hosts_lists_more_names(browsers: Browsers, host: str, status: int) -> None:
    answer = browsers.chat([("Host", host.format(port=browsers.named))], port=browsers.named)
    if status == 421:
        browsers.refused(answer, 421, "misdirected_request")
    else:
        browsers.reached(answer, "/v1/chat/completions")


def test_passthrough_and_health_are_checked_too(browsers: Browsers) -> None:
    rebind = [("Host", f"rebind.attacker.example:{browsers.dropin}")]
    for method, path in (("GET", "/api/tags"), ("GET", "/"), ("GET", "/healthz")):
        answer = browsers.send(browsers.dropin, request(method, path, headers=rebind))
        browsers.refused(answer, 421, "misdirected_request")
    answer = browsers.send(
        browsers.dropin,
        request("POST", "/api/generate", headers=rebind, json_body={"model": "tiny"}),
    )
    browsers.refused(answer, 421, "misdirected_request")
    own = [("Host", f"127.0.0.1:{browsers.dropin}")]
    answer = browsers.send(browsers.dropin, request("GET", "/v1/models", headers=own))
    browsers.reached(answer, "/v1/models")


# ---- Origin: cross-site requests ----------------------------------------------------

FOREIGN_ORIGINS = [
    "https://evil.example",
    "http://evil.example",
    "null",
    "http://127.0.0.1:{port}.evil.example",
    "http://127.0.0.1:{other}",  # another local service is another origin
    "http://127.0.0.1",
    "https://127.0.0.1:{port}",  # scheme differs
    "http://localhost:{port}",  # the request names 127.0.0.1: another origin
    "http://127.0.0.1:{port}/",
    "http://127.0.0.1:{port}, https://evil.example",
    "file://",
    "chrome-extension://abcdefghijklmnop",
    "",
]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_a_foreign_origin_is_403_before_the_engine(browsers: Browsers, origin: str) -> None:
    port = browsers.open
    value = origin.format(port=port, other=port + 1)
    for content_type in ("application/json", "text/plain"):
        answer = browsers.chat(
            [("Host", f"127.0.0.1:{port}"), ("Origin", value), ("Content-Type", content_type)]
        )
        browsers.refused(answer, 403, "origin_not_allowed")
        assert answer.header("access-control-allow-origin") is None


def test_the_issue_payload_a_cross_site_text_plain_post(browsers: Browsers) -> None:
    body = b'{"model": "tiny", "prompt": "pwned", "stream": false}'
    for port, path in ((browsers.dropin, "/api/generate"), (browsers.open, "/v1/completions")):
        headers = [
            ("Host", f"127.0.0.1:{port}"),
            ("Origin", "https://evil.example"),
            ("Content-Type", "text/plain;charset=UTF-8"),
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "no-cors"),
        ]
        answer = browsers.send(port, request("POST", path, headers=headers, body=body))
        browsers.refused(answer, 403, "origin_not_allowed")


def test_every_method_and_path_is_checked(browsers: Browsers) -> None:
    for port, method, path in (
        (browsers.open, "GET", "/v1/models"),
        (browsers.open, "GET", "/healthz"),
        (browsers.open, "DELETE", "/v1/models"),
        (browsers.dropin, "GET", "/api/tags"),
        (browsers.dropin, "DELETE", "/api/delete"),
        (browsers.dropin, "POST", "/api/pull"),
    ):
        headers = [("Host", f"127.0.0.1:{port}"), ("Origin", "https://evil.example")]
        answer = browsers.send(port, request(method, path, headers=headers))
        browsers.refused(answer, 403, "origin_not_allowed")


def test_same_origin_and_allowed_origins_pass(browsers: Browsers) -> None:
    port, named = browsers.open, browsers.named
    for host, origin in (
        (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
        (f"localhost:{port}", f"http://localhost:{port}"),
        (f"localhost:{port}", f"HTTP://LOCALHOST:{port}"),
        ("localhost", "http://localhost:80"),
        ("localhost:80", "http://localhost"),
    ):
        answer = browsers.chat([("Host", host), ("Origin", origin)])
        browsers.reached(answer, "/v1/chat/completions")
    answer = browsers.chat(
        [("Host", f"gateway.example.test:{named}"), ("Origin", "https://app.example.test")],
        port=named,
    )
    browsers.reached(answer, "/v1/chat/completions")
    assert answer.header("access-control-allow-origin") == "https://app.example.test"


def test_preflights_are_answered_by_the_gateway(browsers: Browsers) -> None:
    named = browsers.named
    for origin, status in (("https://app.example.test", 204), ("https://evil.example", 403)):
        headers = [
            ("Host", f"127.0.0.1:{named}"),
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ]
        answer = browsers.send(named, request("OPTIONS", "/v1/chat/completions", headers=headers))
        assert answer.status == status
        assert browsers.engine.calls() == []


def test_sec_fetch_site_without_origin(browsers: Browsers) -> None:
    port = browsers.open
    for site, reaches in (
        ("cross-site", False),
        ("same-site", False),
        ("Cross-Site", False),
        ("same-origin", True),
        ("none", True),
    ):
        answer = browsers.chat([("Host", f"127.0.0.1:{port}"), ("Sec-Fetch-Site", site)])
        if reaches:
            browsers.reached(answer, "/v1/chat/completions")
        else:
            browsers.refused(answer, 403, "origin_not_allowed")
    # A safe method without Origin (a link, an <img>) is not refused: it changes nothing.
    answer = browsers.send(
        browsers.dropin,
        request(
            "GET",
            "/v1/models",
            headers=[("Host", f"127.0.0.1:{browsers.dropin}"), ("Sec-Fetch-Site", "cross-site")],
        ),
    )
    browsers.reached(answer, "/v1/models")


# ---- Content type: only JSON is read as JSON -----------------------------------------

NOT_JSON = [
    [("Content-Type", "text/plain")],
    [("Content-Type", "text/plain;charset=UTF-8")],
    [("Content-Type", "application/x-www-form-urlencoded")],
    [("Content-Type", "multipart/form-data; boundary=x")],
    [],
    [("Content-Type", "")],
    [("Content-Type", "text/json")],
    [("Content-Type", "application/jsonp")],
    [("Content-Type", "application/x-json")],
    [("Content-Type", "application/json-seq")],
    [("Content-Type", "application/+json")],
    [("Content-Type", "application/json, text/plain")],
    [("Content-Type", "text/plain; x=application/json")],
    [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
    [("Content-Type", "text/plain"), ("Content-Type", "application/json")],
]


@pytest.mark.parametrize("declared", NOT_JSON)
def test_a_body_that_does_not_say_json_is_415(
    browsers: Browsers, declared: list[tuple[str, str]]
) -> None:
    body = b'{"model": "tiny", "prompt": "x"}'
    for port, path in (
        (browsers.open, "/v1/chat/completions"),
        (browsers.open, "/v1/embeddings"),
        (browsers.dropin, "/api/generate"),
        (browsers.dropin, "/api/chat"),
        (browsers.dropin, "/v1/chat/completions"),
    ):
        headers = [("Host", f"127.0.0.1:{port}"), *declared]
        answer = browsers.send(port, request("POST", path, headers=headers, body=body))
        browsers.refused(answer, 415, "unsupported_media_type")


def test_chunked_and_bodies_on_other_methods_are_checked(browsers: Browsers) -> None:
    port = browsers.dropin
    chunked = (
        f"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        '10\r\n{"model": "tiny"\r\n1\r\n}\r\n0\r\n\r\n'
    )
    browsers.refused(browsers.send(port, chunked.encode()), 415, "unsupported_media_type")
    for method, path in (("DELETE", "/api/delete"), ("GET", "/api/show"), ("PUT", "/api/x")):
        answer = browsers.send(
            port,
            request(
                method,
                path,
                headers=[("Host", f"127.0.0.1:{port}"), ("Content-Type", "text/plain")],
                body=b'{"model": "tiny"}',
            ),
        )
        browsers.refused(answer, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/vnd.api+json",
        "APPLICATION/problem+JSON",
    ],
)
def test_json_media_types_pass(browsers: Browsers, content_type: str) -> None:
    for port, path in ((browsers.open, "/v1/chat/completions"), (browsers.dropin, "/api/chat")):
        headers = [("Host", f"127.0.0.1:{port}"), ("Content-Type", content_type)]
        answer = browsers.send(port, request("POST", path, headers=headers, json_body=CHAT))
        browsers.reached(answer, path)


def test_bodyless_requests_and_uploads(browsers: Browsers) -> None:
    port = browsers.dropin
    answer = browsers.send(
        port, request("POST", "/api/show", headers=[("Host", f"127.0.0.1:{port}")], body=b"")
    )
    browsers.reached(answer, "/api/show")
    upload = (
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\ntiny\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF\r\n--b--\r\n"
    )
    open_port = browsers.open
    for content_type, status in (
        ("multipart/form-data; boundary=b", 200),
        ("application/json", 415),
    ):
        headers = [("Host", f"127.0.0.1:{open_port}"), ("Content-Type", content_type)]
        answer = browsers.send(
            open_port, request("POST", "/v1/audio/transcriptions", headers=headers, body=upload)
        )
        if status == 200:
            browsers.reached(answer, "/v1/audio/transcriptions")
        else:
            browsers.refused(answer, 415, "unsupported_media_type")


def test_curl_without_a_content_type_is_told_how_to_fix_it(browsers: Browsers) -> None:
    port = browsers.dropin
    headers = [
        ("Host", f"127.0.0.1:{port}"),
        ("User-Agent", "curl/8.5.0"),
        ("Accept", "*/*"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ]
    answer = browsers.send(
        port, request("POST", "/api/generate", headers=headers, body=b'{"model":"tiny"}')
    )
    error = assert_openai_error(answer, 415, code="unsupported_media_type")
    assert "Content-Type: application/json" in error["message"]
