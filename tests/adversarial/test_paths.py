"""Class 1: paths as the engine decodes them.

One gateway in front of a recording engine of every kind: an OpenAI listener, a
`passthrough` listener per engine kind (admin endpoints locked), one Ollama
passthrough with `allow_admin_endpoints: true`, and one with intrusion detection on.
Intrusion detection is off elsewhere, so every answer here is the path policy's own.

For every admin route of every engine, in many spellings (percent-encoding, case,
slashes, dot segments, method variants, HTTP/1.0, absolute-form): 403 when the
spelling canonicalises to the route, 400 when it cannot be canonicalised without
guessing; the recording engine must see none of them. Ordinary routes, spelt
oddly, reach the engine in their canonical form (`Seen.target`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.config.limit_settings import ConnectionLimits
from flm_gateway.engines.admin_routes import AdminRoute
from flm_gateway.engines.registry import adapter_for
from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    request,
    sources,
)
from tests.support.gateway_process import free_port
from tests.support.recording_engine import RecordingEngine

KINDS = ("ollama", "vllm", "llamacpp", "lmstudio", "openai")
LOCKED = ("ollama", "vllm", "llamacpp", "lmstudio")
MARK = "X-Paths-Test"
CONFIG = """\
server: {state_dir: "{state_dir}"}
listeners:
  - {name: api, bind: "127.0.0.1:{port}"}
  - {name: ollama, bind: "127.0.0.1:PORT_ollama", passthrough: ollama}
  - {name: vllm, bind: "127.0.0.1:PORT_vllm", passthrough: vllm}
  - {name: llamacpp, bind: "127.0.0.1:PORT_llamacpp", passthrough: llamacpp}
  - {name: lmstudio, bind: "127.0.0.1:PORT_lmstudio", passthrough: lmstudio}
  - {name: openai, bind: "127.0.0.1:PORT_openai", passthrough: openai}
  - name: opened
    bind: "127.0.0.1:PORT_opened"
    passthrough: ollama
    allow_admin_endpoints: true
  - name: guarded
    bind: "127.0.0.1:PORT_guarded"
    passthrough: ollama
    security: {intrusion: {enabled: true}}
engines:
  - {name: ollama, kind: ollama, url: "ENGINE_URL"}
  - {name: vllm, kind: vllm, url: "URL_vllm"}
  - {name: llamacpp, kind: llamacpp, url: "URL_llamacpp"}
  - {name: lmstudio, kind: lmstudio, url: "URL_lmstudio"}
  - {name: openai, kind: openai, url: "URL_openai"}
routes:
  - {model: tiny-vllm, engine: vllm}
security:
  intrusion: {enabled: false}
"""


@dataclass
class Stack:
    api: int
    ports: dict[str, int]
    engines: dict[str, RecordingEngine]
    source: Iterator[str]

    def send(self, port: int, data: bytes) -> Answer:
        return exchange(port, data, source=next(self.source))

    def quiet(self) -> None:
        for engine in self.engines.values():
            engine.clear()

    def seen(self) -> list[str]:
        """What of ours reached any engine since `quiet()` (every request the tests send
        carries `X-Paths-Test`; the gateway's own health checks do not)."""
        return [
            f"{kind}: {s.method} {s.target.decode('latin-1')}"
            for kind, engine in self.engines.items()
            for s in engine.calls(health=True)
            if s.header(MARK) is not None
        ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path: Path = tmp_path_factory.mktemp("paths")
    with ExitStack() as running:
        engines = {
            kind: running.enter_context(RecordingEngine(kind, models=(f"tiny-{kind}",)))
            for kind in KINDS
        }
        ports = {name: free_port() for name in (*KINDS, "opened", "guarded")}
        config = CONFIG
        for name, port in ports.items():
            config = config.replace(f"PORT_{name}", str(port))
        for kind, engine in engines.items():
            config = config.replace(f"URL_{kind}", engine.url)
        gateway = running.enter_context(gateway_before(engines["ollama"], tmp_path, config))
        yield Stack(port_of(gateway), ports, engines, sources(31))


# ---- spellings -----------------------------------------------------------------------

Spelling = Callable[[str], str]


def _encode_all(path: str, case: str = "%{:02X}") -> str:
    return "".join(c if c == "/" else case.format(ord(c)) for c in path)


def _encode_last_letter(path: str) -> str:
    index = max(i for i, c in enumerate(path) if c.isalpha())
    return path[:index] + f"%{ord(path[index]):02x}" + path[index + 1 :]


def _mixed_case(path: str) -> str:
    return "".join(c.upper() if i % 2 else c for i, c in enumerate(path))


def _inner_slash(path: str) -> int:
    """Index of the last `/` (the one between the last two segments, or the first)."""
    return path.rfind("/")


def _for_slash(path: str, token: str) -> str:
    """`path` with its last inner `/` spelt `token` (after the root of a one-segment path)."""
    index = _inner_slash(path)
    if index == 0:
        return "/" + token + path[1:]
    return path[:index] + token + path[index + 1 :]


CANONICALISED: dict[str, Spelling] = {
    "as is": lambda p: p,
    "all encoded": _encode_all,
    "all encoded, lower hex": lambda p: _encode_all(p, "%{:02x}"),
    "one letter encoded": _encode_last_letter,
    "upper case": str.upper,
    "mixed case": _mixed_case,
    "mixed case, encoded": lambda p: _encode_last_letter(_mixed_case(p)),
    "leading //": lambda p: "/" + p,
    "doubled slashes": lambda p: p.replace("/", "//"),
    "trailing slash": lambda p: p + "/",
    "trailing //": lambda p: p + "//",
    "./ inserted": lambda p: p[: _inner_slash(p)] + "/." + p[_inner_slash(p) :],
    "/x/../ before": lambda p: "/x/.." + p,
    "/../ before": lambda p: "/.." + p,
    "/healthz/../ before": lambda p: "/healthz/.." + p,
    "trailing /x/..": lambda p: p + "/x/..",
    "all of it": lambda p: "//x/../" + _encode_last_letter(p.upper())[1:] + "/./",
    "query": lambda p: p + "?model=x&stream=true",
    "query with escapes": lambda p: p + "?x=%2F..%2F&y=%25",
}

UNCANONICAL: dict[str, Spelling] = {
    "%2F for /": lambda p: _for_slash(p, "%2F"),
    "%2f for /": lambda p: _for_slash(p, "%2f"),
    "%2F first": lambda p: "/%2F" + p[1:],
    "%5C for /": lambda p: _for_slash(p, "%5C"),
    "%5c for /": lambda p: _for_slash(p, "%5c"),
    "backslash": lambda p: _for_slash(p, "\\"),
    "%2e segment": lambda p: p[: _inner_slash(p)] + "/%2e" + p[_inner_slash(p) :],
    "%2E%2E segment": lambda p: p + "/x/%2E%2E",
    "%2e%2e before": lambda p: "/x/%2e%2e" + p,
    ".%2E before": lambda p: "/x/.%2E" + p,
    "%2e. before": lambda p: "/x/%2e." + p,
    "double encoded letter": lambda p: _encode_last_letter(p).replace("%", "%25", 1),
    "double encoded slash": lambda p: _for_slash(p, "%252F"),
    "double encoded dot-dot": lambda p: "/x/%252e%252e" + p,
    "NUL after": lambda p: p + "%00",
    "NUL inside": lambda p: _for_slash(p, "/%00"),
    "CR LF after": lambda p: p + "%0d%0a",
    "tab after": lambda p: p + "%09",
    "DEL after": lambda p: p + "%7F",
    ";param after": lambda p: p + ";x",
    ";/ after": lambda p: p + ";/",
    ";jsessionid": lambda p: p + ";jsessionid=1",
    "..;/ before": lambda p: "/x/..;" + p,
    "%G0": lambda p: p + "%G0",
    "lone %": lambda p: p + "%",
    "%u escape": lambda p: "/x/%u002e%u002e" + p,
    "overlong dot-dot": lambda p: "/x/%c0%ae%c0%ae" + p,
    "overlong slash": lambda p: "/x%c0%af" + p[1:],
    "fragment": lambda p: p + "#x",
    "raw non-ASCII": lambda p: p + "\xc0\xae",
    "raw UTF-8 look-alike": lambda p: p[:-1] + "\u0131".encode().decode("latin-1"),
    "raw control": lambda p: p + "\x01",
    "raw DEL": lambda p: p + "\x7f",
    "NUL in query": lambda p: p + "?x=%00",
    "bad escape in query": lambda p: p + "?x=%zz",
}
# Control characters never reach canonical_target: the HTTP layer refuses a request line
# that carries one (`mitm_http1`, class 4/9), with its own code.
REFUSED_AS_HTTP = {"raw control", "raw DEL"}


def _uncanonical_code(name: str) -> str:
    return "invalid_http" if name in REFUSED_AS_HTTP else "invalid_path"


def _outcome(answer: Answer) -> tuple[int, str | None]:
    """(status, error code) of an answer in OpenAI's error shape (checked)."""
    return answer.status, assert_openai_error(answer, answer.status)["code"]


def _admin_cases() -> list[tuple[str, AdminRoute]]:
    return [
        (kind, route)
        for kind in LOCKED
        for route in adapter_for(EngineKind(kind)).admin_routes.routes
    ]


def _attempt(
    method: str,
    target: str,
    version: str = "HTTP/1.1",
    mark: str = "attack",
    body: object = None,
) -> bytes:
    """A request with our mark (and a small JSON body), raw enough for any target."""
    payload = json.dumps({} if body is None else body).encode()
    headers = {"Content-Type": "application/json", MARK: mark}
    if version == "HTTP/1.1":
        return request(method, target, body=payload, headers=headers)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = f"{method} {target} {version}\r\n{lines}Content-Length: {len(payload)}\r\n\r\n"
    return head.encode("latin-1") + payload


def _refused(answer: Answer, method: str, status: int, code: str) -> None:
    """`answer` refuses with `status`/`code` (a HEAD answer carries no body to check)."""
    if method.upper() == "HEAD":
        assert answer.status == status, answer.raw[:300]
    else:
        assert_openai_error(answer, status, code=code)


# ---- admin routes on passthrough listeners --------------------------------------------


@pytest.mark.parametrize(("kind", "route"), _admin_cases(), ids=lambda v: getattr(v, "path", v))
def test_every_spelling_of_an_admin_route_is_refused(
    stack: Stack, kind: str, route: AdminRoute
) -> None:
    port = stack.ports[kind]
    stack.quiet()
    outcomes = {
        (name, spell(route.path)): _outcome(stack.send(port, _attempt("POST", spell(route.path))))
        for name, spell in CANONICALISED.items()
    }
    assert outcomes == {key: (403, "admin_endpoint_disabled") for key in outcomes}
    outcomes = {
        (name, spell(route.path)): _outcome(stack.send(port, _attempt("POST", spell(route.path))))
        for name, spell in UNCANONICAL.items()
    }
    assert outcomes == {key: (400, _uncanonical_code(key[0])) for key in outcomes}
    assert stack.seen() == []


@pytest.mark.parametrize("kind", LOCKED)
def test_method_and_protocol_variants(stack: Stack, kind: str) -> None:
    port = stack.ports[kind]
    routes = adapter_for(EngineKind(kind)).admin_routes.routes
    stack.quiet()
    for route in routes:
        methods = ["POST", "PUT", "DELETE", "PATCH", "post", "Post"]
        if not route.open_methods:
            methods += ["GET", "HEAD", "OPTIONS", "get"]
        for method in methods:
            answer = stack.send(port, _attempt(method, route.path))
            _refused(answer, method, 403, "admin_endpoint_disabled")
        encoded = _encode_last_letter(route.path)
        for version in ("HTTP/1.0", "HTTP/1.1"):
            answer = stack.send(port, _attempt("POST", encoded, version))
            assert_openai_error(answer, 403, code="admin_endpoint_disabled")
        for absolute in (
            f"http://127.0.0.1:{port}{encoded}",
            f"http://localhost{route.path}",
            f"HTTP://evil.example:80//x/..{route.path.upper()}",
        ):
            # Refused as an admin route, or earlier because the authority does not name
            # the listener the Host header names (class 8): never forwarded either way.
            answer = stack.send(port, _attempt("POST", absolute))
            assert answer.status in (400, 403), (absolute, answer.status)
            assert_openai_error(answer, answer.status)
    assert stack.seen() == []


# ---- what still reaches the engines, and in which form --------------------------------

ALLOWED = [
    # (listener, method, target as sent, target the engine must receive)
    ("ollama", "POST", "/api/chat", "/api/chat"),
    ("ollama", "POST", "/api/%63hat", "/api/chat"),
    ("ollama", "POST", "//api//generate/", "/api/generate/"),
    ("ollama", "POST", "/x/../api/./embed", "/api/embed"),
    ("ollama", "GET", "/api/tags?x=%2F..%2F&y=a+b", "/api/tags?x=%2F..%2F&y=a+b"),
    ("ollama", "POST", "/api/show", "/api/show"),
    ("ollama", "POST", "/%76%31/chat/completions", "/v1/chat/completions"),
    ("ollama", "GET", "/api/x%3a%20y", "/api/x%3A%20y"),
    ("ollama", "GET", "/api/%C3%A9t%C3%A9", "/api/%C3%A9t%C3%A9"),
    ("llamacpp", "GET", "/props", "/props"),
    ("llamacpp", "GET", "/%70rops/", "/props/"),
    ("llamacpp", "GET", "/models", "/models"),
    ("llamacpp", "POST", "/completion", "/completion"),
    ("llamacpp", "POST", "/tokenize", "/tokenize"),
    ("vllm", "POST", "/v1/%63hat/completions", "/v1/chat/completions"),
    ("vllm", "GET", "/version", "/version"),
    ("vllm", "POST", "/tokenize", "/tokenize"),
    ("lmstudio", "GET", "/api/v1/models", "/api/v1/models"),
    ("lmstudio", "POST", "/api/v1/%63hat", "/api/v1/chat"),
    ("lmstudio", "GET", "/api/v0/models/", "/api/v0/models/"),
    # an openai-kind engine has no native admin API: its paths are forwarded
    ("openai", "POST", "/api/%70ull", "/api/pull"),
    ("openai", "POST", "/v1/chat/completions", "/v1/chat/completions"),
    # allow_admin_endpoints: true opens the lock, never the canonicalisation
    ("opened", "POST", "/api/%70ull", "/api/pull"),
    ("opened", "DELETE", "//API/delete/", "/API/delete/"),
    ("opened", "POST", "/api/blobs/sha256:00", "/api/blobs/sha256:00"),
]


@pytest.mark.parametrize(("listener", "method", "sent", "received"), ALLOWED)
def test_ordinary_routes_reach_the_engine_in_canonical_form(
    stack: Stack, listener: str, method: str, sent: str, received: str
) -> None:
    kind = "ollama" if listener == "opened" else listener
    mark = f"allowed-{listener}-{method}-{sent}"
    stack.quiet()
    answer = stack.send(stack.ports[listener], _attempt(method, sent, mark=mark))
    assert answer.status == 200, (answer.status, answer.body[:200])
    mine = [s for s in stack.engines[kind].calls(health=True) if s.header(MARK) == mark]
    assert [(s.method, s.target.decode("latin-1")) for s in mine] == [(method, received)]
    assert mine[0].raw_path == received.partition("?")[0]
    others = [s for s in stack.seen() if not s.startswith(f"{kind}: ")]
    assert others == []


def test_absolute_form_is_forwarded_in_origin_form(stack: Stack) -> None:
    port = stack.ports["ollama"]
    stack.quiet()
    answer = stack.send(port, _attempt("POST", "http://127.0.0.1/api/%63hat?x=1"))
    assert answer.status == 200
    assert stack.seen() == ["ollama: POST /api/chat?x=1"]


@pytest.mark.parametrize("name", sorted(UNCANONICAL))
def test_the_open_listener_still_refuses_what_cannot_be_canonicalised(
    stack: Stack, name: str
) -> None:
    stack.quiet()
    answer = stack.send(stack.ports["opened"], _attempt("POST", UNCANONICAL[name]("/api/pull")))
    assert_openai_error(answer, 400, code=_uncanonical_code(name))
    assert stack.seen() == []


# ---- the OpenAI listener ---------------------------------------------------------------

CHAT = {"model": "tiny-vllm", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "target",
    [
        "/v1/chat/completions",
        "/v1/%63hat/completions",
        "/%76%31/%63%68%61%74/%63%6f%6d%70%6c%65%74%69%6f%6e%73",
        "//v1//chat/completions",
        "/v1/./chat/completions",
        "/x/../v1/chat/completions",
        "/healthz/../v1/chat/completions",
        "/v1/chat/completions?x=1",
    ],
)
def test_openai_spellings_of_chat_reach_the_engine_canonically(stack: Stack, target: str) -> None:
    stack.quiet()
    answer = stack.send(stack.api, _attempt("POST", target, body=CHAT))
    assert answer.status == 200, (answer.status, answer.body[:200])
    [seen] = stack.engines["vllm"].calls()
    assert seen.raw_path == "/v1/chat/completions"
    assert stack.seen() == [f"vllm: POST {seen.target.decode()}"]


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/v1/chat%2Fcompletions", 400),
        ("/v1%2fchat/completions", 400),
        ("/v1/chat/completions%00", 400),
        ("/v1/chat/completions;x", 400),
        ("/v1\\chat\\completions", 400),
        ("/v1/%2e/chat/completions", 400),
        ("/v1/chat/%2570letions", 400),
        ("/v1/chat/completions#", 400),
        ("/v1/chat/completions?x=%00", 400),
        ("/V1/chat/completions", 404),
        ("/v1/chat/completions/", 404),
        ("/v1/chat/completions%20", 404),
    ],
)
def test_openai_spellings_that_are_refused(stack: Stack, target: str, status: int) -> None:
    stack.quiet()
    answer = stack.send(stack.api, _attempt("POST", target, body=CHAT))
    assert_openai_error(answer, status, code="invalid_path" if status == 400 else "unknown_url")
    assert stack.seen() == []


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/healthz", 200),
        ("/%68ealthz", 200),
        ("/%68%65%61%6C%74%68%7A", 200),
        ("//healthz", 200),
        ("/./healthz", 200),
        ("/v1/../healthz", 200),
        ("/%72eadyz", 200),
        ("/healthz%2F", 400),
        ("/healthz;x", 400),
        ("/healthz%00", 400),
        ("/%2e%2e/healthz", 400),
    ],
)
def test_health_paths_in_any_spelling(stack: Stack, target: str, status: int) -> None:
    stack.quiet()
    answer = stack.send(stack.api, _attempt("GET", target))
    if status == 200:
        assert answer.status == 200 and "status" in answer.json, answer.body[:200]
    else:
        assert_openai_error(answer, status, code="invalid_path")
    assert stack.seen() == []


# One byte longer than the request line `server.limits.max_url_length` admits.
TOO_LONG = "/v1/models?" + "a" * (
    ConnectionLimits().max_url_length - len("GET /v1/models? HTTP/1.1") + 1
)


@pytest.mark.parametrize(
    ("method", "target", "status", "code"),
    [
        ("OPTIONS", "*", 400, "invalid_path"),
        # Refused by the HTTP layer, before any addon (the length is bounded there only).
        ("GET", TOO_LONG, 414, "uri_too_long"),
    ],
)
def test_targets_that_are_not_paths_or_too_long(
    stack: Stack, method: str, target: str, status: int, code: str
) -> None:
    stack.quiet()
    for port in (stack.api, stack.ports["ollama"]):
        assert_openai_error(stack.send(port, _attempt(method, target)), status, code=code)
    assert stack.seen() == []


# ---- scanners are still seen by intrusion detection ------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/api/..%2f..%2fetc/passwd",
        "/x/%2e%2e/api/pull",
        "/x/..%5c..%5capi/pull",
        "/api/pull%00",
        "/x/%252e%252e/api/pull",
    ],
)
def test_traversal_spellings_meet_intrusion_detection_first(stack: Stack, target: str) -> None:
    """On a listener with intrusion detection, the attempt is answered by it (and counted
    towards auto-block), not hidden behind the path refusal that would otherwise come."""
    stack.quiet()
    answer = stack.send(stack.ports["guarded"], _attempt("POST", target))
    assert_openai_error(answer, 403, code="request_rejected")
    assert stack.seen() == []


def test_messages_never_echo_the_target(stack: Stack) -> None:
    marker = "/api/pull%0d%0aX-Injected:%20yes"
    answer = stack.send(stack.ports["ollama"], _attempt("POST", marker))
    assert_openai_error(answer, 400)
    assert not re.search(rb"(?i)x-injected", answer.raw)
