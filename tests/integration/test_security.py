"""Security end to end: the issue's reference config in the real gateway process, keys
from the CLI, the official `openai` SDK and curl as clients.

Requests come from distinct 127.0.0.0/8 source addresses so a test that gets its
address blocked does not disturb the others.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.gateway_process import ROOT
from tests.support.redis_server import redis_server
from tests.support.security_stack import REFERENCE_CONFIG, SecurityStack, security_stack

PROMPTS = [
    "Explain: SELECT name FROM users WHERE id = 1 UNION SELECT password FROM admins; --",
    "Why is ' OR '1'='1 dangerous, and what does DROP TABLE students; do?",
    "My script opens ../../etc/passwd and C:\\Windows\\win.ini; is that path traversal?",
    "What do `cat /etc/hosts | sh`, $(whoami) and ${jndi:ldap://x/a} do in a shell?",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityStack]:
    with security_stack(tmp_path_factory.mktemp("security")) as running:
        yield running


def sdk(stack: SecurityStack, key: str, source: str = "127.0.0.1") -> openai.AsyncOpenAI:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return openai.AsyncOpenAI(
        base_url=stack.gateway.url + "/v1",
        api_key=key,
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport, timeout=20),
    )


def test_keys_create_prints_json_with_key_and_id(stack: SecurityStack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flm_gateway",
            "keys",
            "create",
            "--name",
            "ci",
            "--config",
            str(stack.gateway.config_path),
            "--json",
        ],
        capture_output=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    created = json.loads(result.stdout)
    assert created["key"].startswith("flm-") and created["id"].startswith("key_")
    stack.settle()
    assert stack.status("/v1/models", key=created["key"]) == 200
    assert created["key"] not in stack.gateway.log


async def test_openai_sdk_with_a_key_and_without(stack: SecurityStack) -> None:
    key = stack.new_key("sdk")
    stack.settle()
    client = sdk(stack, key, "127.0.0.2")
    models = await client.models.list()
    assert [m.id for m in models.data] == ["tiny-a"]
    raw = await client.chat.completions.with_raw_response.create(
        model="tiny-a", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-ratelimit-limit-requests"] == "10"
    assert raw.headers["x-ratelimit-remaining-requests"] == "8"
    assert raw.headers["x-request-id"]
    async with stack.async_client("127.0.0.2") as plain:
        missing = await plain.get(stack.gateway.url + "/v1/models")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(openai.AuthenticationError):
        await sdk(stack, "flm-not-a-real-key", "127.0.0.3").models.list()
    stream = await client.chat.completions.create(
        model="tiny-a", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert len(chunks) > 1
    assert "flm-not-a-real-key" not in stack.gateway.log and key not in stack.gateway.log


async def test_curl_x_api_key_and_health_without_key(stack: SecurityStack) -> None:
    key = stack.new_key("curl")
    stack.settle()

    async def curl(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            "curl",
            "-s",
            "--interface",
            "127.0.0.4",
            "-w",
            "\n%{http_code}",
            *args,
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        body, _, status = out.decode().rpartition("\n")
        return int(status), body

    status, body = await curl("-H", f"x-api-key: {key}", stack.gateway.url + "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == "tiny-a"
    assert (await curl(stack.gateway.url + "/healthz"))[0] == 200
    assert (await curl(stack.gateway.url + "/readyz"))[0] == 200
    status, body = await curl(stack.gateway.url + "/v1/models")
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"


async def test_exactly_n_of_5n_concurrent_requests_pass(stack: SecurityStack) -> None:
    key = stack.new_key("burst")
    stack.settle()
    client = sdk(stack, key, "127.0.0.5")

    async def one() -> tuple[int, httpx.Headers]:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="tiny-a", messages=[{"role": "user", "content": "x"}]
            )
        except openai.RateLimitError as exc:
            return exc.status_code, exc.response.headers
        return raw.http_response.status_code, raw.headers

    results = await asyncio.gather(*(one() for _ in range(50)))
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 10 and statuses.count(429) == 40
    refused = next(headers for status, headers in results if status == 429)
    assert int(refused["retry-after"]) >= 1
    assert refused["x-ratelimit-limit-requests"] == "10"
    assert refused["x-ratelimit-remaining-requests"] == "0"
    assert refused["x-ratelimit-reset-requests"].endswith("s")


async def test_prompts_about_sql_and_paths_pass(stack: SecurityStack) -> None:
    key = stack.new_key("prompts")
    stack.settle()
    client = sdk(stack, key, "127.0.0.6")
    for prompt in PROMPTS:
        reply = await client.chat.completions.create(
            model="tiny-a", messages=[{"role": "user", "content": prompt}]
        )
        assert reply.choices[0].message.content


def test_intrusion_is_refused_before_auth(stack: SecurityStack) -> None:
    source = "127.0.0.7"
    assert stack.status("/v1/models?id=1%20UNION%20SELECT%20password", source=source) == 403
    with stack.client(source) as client:
        response = client.get(
            stack.gateway.url + "/v1/models", headers={"user-agent": "sqlmap/1.7"}
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "request_rejected"
    stack.settle()
    _, out = stack.cli("security", "intrusion", "--ip", source, "--json")
    rules = {event["details"]["rule"] for event in json.loads(out)}
    assert {"SQL-001", "SCN-001"} <= rules


def test_honeypot_answers_then_blocks(stack: SecurityStack) -> None:
    key = stack.new_key("victim")
    stack.settle()
    source = "127.0.0.8"
    with stack.client(source) as client:
        decoy = client.get(stack.gateway.url + "/.env")
        assert decoy.status_code == 200 and "DB_PASSWORD" in decoy.text
        after = client.get(stack.gateway.url + "/v1/models", headers={"x-api-key": key})
    assert after.status_code == 403 and after.json()["error"]["code"] == "ip_blocked"
    assert stack.status("/v1/models", key=key, source="127.0.0.9") == 200
    stack.settle()
    _, out = stack.cli("security", "blocklist", "list", "--json")
    assert any(b["cidr"] == "127.0.0.8/32" and b["reason"] == "honeypot" for b in json.loads(out))
    assert stack.cli("security", "blocklist", "remove", "127.0.0.8")[0] == 0
    stack.wait_for(lambda: stack.status("/v1/models", key=key, source=source) == 200, 3)


def test_revoke_and_rotate_apply_within_seconds(stack: SecurityStack) -> None:
    _, out = stack.cli("keys", "create", "--name", "short", "--json")
    created = json.loads(out)
    stack.settle()
    source = "127.0.0.10"
    assert stack.status("/v1/models", key=created["key"], source=source) == 200
    _, out = stack.cli("keys", "rotate", created["id"], "--overlap", "0s", "--json")
    new_secret = json.loads(out)["key"]
    stack.settle()
    assert stack.status("/v1/models", key=created["key"], source=source) == 401
    assert stack.status("/v1/models", key=new_secret, source=source) == 200
    stack.cli("keys", "revoke", created["id"])
    started = time.monotonic()
    stack.wait_for(lambda: stack.status("/v1/models", key=new_secret, source=source) == 401, 2)
    assert time.monotonic() - started < 2


def test_cors_preflight_and_headers(stack: SecurityStack) -> None:
    preflight = {
        "origin": "https://app.example.com",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    with stack.client("127.0.0.11") as client:
        allowed = client.options(stack.gateway.url + "/v1/chat/completions", headers=preflight)
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        other = client.options(
            stack.gateway.url + "/v1/chat/completions",
            headers={**preflight, "origin": "https://evil.example"},
        )
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
        error = client.get(
            stack.gateway.url + "/v1/models", headers={"origin": "https://app.example.com"}
        )
        assert error.status_code == 401
        assert error.headers["access-control-allow-origin"] == "https://app.example.com"


def test_audit_log_is_chained_and_secret_free(stack: SecurityStack) -> None:
    stack.settle()
    code, out = stack.cli("security", "audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"]
    _, dump = stack.cli("security", "audit", "--json", "--limit", "10000")
    assert "flm-" not in dump.replace('"flm-gateway', "")
    types = {event["type"] for event in json.loads(dump)}
    assert {"config.loaded", "key.created", "honeypot.hit", "ip.blocked"} <= types


def test_keys_and_blocks_survive_a_restart(tmp_path: Path) -> None:
    with security_stack(tmp_path) as first:
        key = first.new_key("durable")
        first.settle()
        for _ in range(5):
            assert first.status("/v1/models", key="flm-wrong", source="127.0.0.20") == 401
        assert first.status("/v1/models", key=key, source="127.0.0.20") == 403
        assert first.status("/v1/models", key=key, source="127.0.0.21") == 200
        first.gateway.stop()
        with security_stack(tmp_path) as second:
            assert second.status("/v1/models", key=key, source="127.0.0.20") == 403
            assert second.status("/v1/models", key=key, source="127.0.0.21") == 200
            _, out = second.cli("security", "blocklist", "list", "--json")
            (block,) = json.loads(out)
            assert (block["cidr"], block["reason"], block["strikes"]) == (
                "127.0.0.20/32",
                "auth",
                1,
            )


def test_redis_backend_and_failing_closed_when_it_goes_away(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as redis:
        config = REFERENCE_CONFIG.replace(
            "state: {refresh_interval: 200ms}",
            f'state: {{backend: redis, redis_url: "{redis.url}", refresh_interval: 200ms, '
            "stale_after: 1s}",
        )
        gateway_dir = tmp_path / "gw"
        gateway_dir.mkdir()
        with security_stack(gateway_dir, config) as stack:
            key = stack.new_key("shared")
            stack.settle()
            assert stack.status("/v1/models", key=key) == 200
            assert "state store: redis" in stack.gateway.log
            redis.process.terminate()
            redis.process.wait(5)
            stack.wait_for(lambda: stack.status("/v1/models", key=key) == 503, 5, "503")
            with stack.client() as client:
                refused = client.get(stack.gateway.url + "/v1/models", headers={"x-api-key": key})
            assert refused.json()["error"]["code"] == "security_state_unavailable"
            assert stack.status("/healthz") == 200


async def test_tokens_per_minute_from_the_engines_usage(stack: SecurityStack) -> None:
    key = stack.new_key("tokens", "--tpm", "10")  # the fake engine reports 9 per reply
    stack.settle()
    client = sdk(stack, key, "127.0.0.12")
    statuses = []
    for _ in range(3):
        try:
            reply = await client.chat.completions.create(
                model="tiny-a", messages=[{"role": "user", "content": "count"}]
            )
            assert reply.usage is not None and reply.usage.total_tokens > 1
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(exc.status_code)
            assert exc.response.headers["x-ratelimit-remaining-tokens"] == "0"
            assert exc.response.headers["x-ratelimit-limit-tokens"] == "10"
    assert statuses == [200, 200, 429]
    stack.settle()
    _, out = stack.cli("keys", "list", "--json")
    row = next(r for r in json.loads(out) if r["name"] == "tokens")
    assert row["requests"] == 2 and row["tokens"] >= 18  # the refused third is not usage
