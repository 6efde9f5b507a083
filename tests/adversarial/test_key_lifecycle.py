"""Class 13, key lifecycle: a new key works at once, refusals are not usage, lapsed keys say so.

The gateway here refreshes its view of the store only once an hour, so anything that
works "at once" works because the gateway checks the store itself, not because a
periodic refresh happened to run. Keys come from the real CLI (`flm-gateway keys`,
its own process) against the same state database; requests are raw bytes from fresh
127.13.x.y sources; the recording engine shows what was forwarded.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flm_gateway.security.keys import generate_secret, hash_secret
from tests.adversarial.cli import run_cli
from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    request,
    sources,
)
from tests.support.gateway_process import GatewayProcess, free_port
from tests.support.recording_engine import RecordingEngine

LAPSED = "flm-" + "L" * 43  # declared in flm.yaml, expired in 2020
CONFIG = f"""\
server: {{state_dir: "{{state_dir}}"}}
state: {{refresh_interval: 1h}}
listeners:
  - {{name: main, bind: "127.0.0.1:{{port}}", auth: api-key}}
engines:
  - {{name: alpha, kind: vllm, url: "ENGINE_URL"}}
routes:
  - {{model: tiny, engine: alpha}}
security:
  auto_block: {{auth_failures: 3, window: 10m, never_block: []}}
  keys:
    - {{id: lapsed, hash: "{hash_secret(LAPSED)}", expires: "2020-01-01T00:00:00Z"}}
"""
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
_sources = sources(13)


@dataclass
class Lifecycle:
    gateway: GatewayProcess
    engine: RecordingEngine
    revoked: str
    """The secret of a key created and revoked before the gateway started."""

    @property
    def port(self) -> int:
        return port_of(self.gateway)

    @property
    def config(self) -> Path:
        return self.gateway.config_path

    def new_key(self, name: str, *extra: str) -> tuple[str, str]:
        """(id, secret) of a key the real CLI just created."""
        result = run_cli(self.config, "keys", "create", "--name", name, "--json", *extra)
        assert result.code == 0, result.stderr
        return result.json["id"], result.json["key"]

    def send(
        self,
        secret: str | None,
        *,
        header: str = "authorization",
        source: str | None = None,
        body: Any = CHAT,
        target: str = "/v1/chat/completions",
    ) -> Answer:
        headers = []
        if secret is not None:
            value = f"Bearer {secret}" if header.lower() == "authorization" else secret
            headers.append((header, value))
        method = "GET" if body is None else "POST"
        data = request(method, target, headers=headers, json_body=body)
        return exchange(self.port, data, source=source or next(_sources))

    def usage(self) -> dict[str, dict[str, Any]]:
        result = run_cli(self.config, "keys", "list", "--json")
        assert result.code == 0, result.stderr
        return {row["id"]: row for row in result.json}

    def auth_failures(self) -> list[dict[str, Any]]:
        result = run_cli(self.config, "security", "audit", "--type", "auth.failed", "--json")
        assert result.code == 0, result.stderr
        return list(result.json)


def _write_config(tmp: Path, engine: RecordingEngine, port: int, refresh: str = "1h") -> Path:
    path = tmp / "flm.yaml"
    text = CONFIG.replace("refresh_interval: 1h", f"refresh_interval: {refresh}")
    path.write_text(
        text.replace("ENGINE_URL", engine.url)
        .replace("{port}", str(port))
        .replace("{state_dir}", str(tmp / "state"))
    )
    return path


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    tmp = tmp_path_factory.mktemp("key-lifecycle")
    port = free_port()
    with RecordingEngine(kind="vllm") as engine:
        config = _write_config(tmp, engine, port)
        revoked = run_cli(config, "keys", "create", "--name", "revoked", "--json").json
        assert run_cli(config, "keys", "revoke", revoked["id"]).code == 0
        with gateway_before(engine, tmp, CONFIG, port=port) as gateway:
            yield Lifecycle(gateway, engine, revoked["key"])


# -- a new key works at once ------------------------------------------------------


def test_a_new_key_works_on_its_very_first_request(lifecycle: Lifecycle) -> None:
    firsts: list[str] = []
    for header in ("authorization", "x-api-key", "X-Api-Key"):
        _, secret = lifecycle.new_key(f"fresh-{header}")
        source = next(_sources)
        firsts.append(source)
        answer = lifecycle.send(secret, header=header, source=source)  # its first use anywhere
        assert answer.status == 200, answer.body
        assert answer.json["choices"][0]["message"]["content"] == "recorded"
        assert lifecycle.send(secret, header=header, source=source).status == 200
    # a burst of first requests with one brand-new key, from many sources at once
    _, secret = lifecycle.new_key("fresh-burst")
    burst = [next(_sources) for _ in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda s: lifecycle.send(secret, source=s, body=None, target="/v1/models"), burst
            )
        )
    assert [a.status for a in answers] == [200] * len(burst)
    # the new secret of a rotation works at once too, and so does the old one (overlap)
    key_id, old = lifecycle.new_key("fresh-rotated")
    rotated = run_cli(lifecycle.config, "keys", "rotate", key_id, "--json")
    assert rotated.code == 0
    assert lifecycle.send(rotated.json["key"], source=next(_sources)).status == 200
    assert lifecycle.send(old, source=next(_sources)).status == 200
    # none of those first requests was an auth failure
    failed = {event["ip"] for event in lifecycle.auth_failures()}
    assert failed.isdisjoint(firsts + burst)


def test_unknown_keys_are_refused_and_reach_nothing(lifecycle: Lifecycle) -> None:
    _, real = lifecycle.new_key("real")
    lifecycle.engine.clear()
    variants = [
        generate_secret(),  # shaped like ours, never issued: the store is checked, then 401
        real[:-1] + ("A" if real[-1] != "A" else "B"),  # one character off
        real + "x",
        real[:-1],
        "FLM-" + real[4:],
        "flm_" + real[4:],
        "sk-" + real[4:],
        real.lower() if real.lower() != real else real.upper(),
        "flm-" + "A" * 500,
    ]
    for header in ("authorization", "x-api-key"):
        for secret in variants:
            answer = lifecycle.send(secret, header=header)
            assert_openai_error(answer, 401, code="invalid_api_key")
            assert answer.json["error"]["message"] == "Invalid API key."
            assert answer.header("www-authenticate") == 'Bearer realm="flm-gateway"'
    assert lifecycle.engine.calls() == []
    # a flood of never-issued keys shaped like ours: all refused, none answered 503,
    # and a valid key keeps working meanwhile
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        flood = pool.map(
            lambda _: lifecycle.send(generate_secret(), body=None, target="/v1/models").status,
            range(160),
        )
        valid = lifecycle.send(real, body=None, target="/v1/models")
        assert set(flood) == {401}
    assert valid.status == 200


# -- lapsed keys say so, and are not guesses --------------------------------------


def test_expired_revoked_and_rotated_out_keys_get_their_own_answer(lifecycle: Lifecycle) -> None:
    key_id, old = lifecycle.new_key("to-rotate")
    rotated = run_cli(lifecycle.config, "keys", "rotate", key_id, "--overlap", "1s", "--json")
    assert lifecycle.send(rotated.json["key"]).status == 200  # the store was checked: new view
    time.sleep(1.2)  # the overlap ends
    lifecycle.engine.clear()
    cases = [
        (LAPSED, "expired_api_key", "This API key has expired."),
        (old, "expired_api_key", "This API key has expired."),
        (lifecycle.revoked, "revoked_api_key", "This API key has been revoked."),
    ]
    for secret, code, message in cases:
        for header in ("authorization", "x-api-key"):
            for body, target in ((CHAT, "/v1/chat/completions"), (None, "/v1/models")):
                answer = lifecycle.send(secret, header=header, body=body, target=target)
                error = assert_openai_error(answer, 401, code=code)
                assert error["message"] == message
                assert answer.header("www-authenticate") == 'Bearer realm="flm-gateway"'
    assert lifecycle.engine.calls() == []
    reasons = {event["details"]["reason"] for event in lifecycle.auth_failures()}
    assert {"expired", "rotated", "revoked"} <= reasons  # audited, with the reason


def test_lapsed_keys_never_trip_auto_block_but_guesses_do(lifecycle: Lifecycle) -> None:
    _, valid = lifecycle.new_key("after-lapsed")
    lapsed_source, guessing_source = next(_sources), next(_sources)
    for secret in (LAPSED, lifecycle.revoked) * 4:  # 8 refusals, auth_failures is 3
        assert lifecycle.send(secret, source=lapsed_source).status == 401
    assert lifecycle.send(valid, source=lapsed_source).status == 200  # not blocked
    for _ in range(3):
        answer = lifecycle.send(generate_secret(), source=guessing_source)
        assert_openai_error(answer, 401, code="invalid_api_key")
    blocked = lifecycle.send(valid, source=guessing_source)
    assert_openai_error(blocked, 403, code="ip_blocked")


# -- refused requests are not usage ------------------------------------------------


def test_only_requests_that_reached_an_engine_are_usage(lifecycle: Lifecycle) -> None:
    limited, secret = lifecycle.new_key("usage", "--rpm", "5", "--max-tokens", "50")
    marker, marker_secret = lifecycle.new_key("usage-marker")
    source = next(_sources)
    lifecycle.engine.clear()
    statuses = [
        lifecycle.send(secret, source=source).status,  # reaches the engine
        lifecycle.send(secret, source=source, header="x-api-key").status,  # reaches the engine
        lifecycle.send(secret, source=source, body=None, target="/v1/models").status,
        lifecycle.send(secret, source=source, body={**CHAT, "max_tokens": 1000}).status,
        lifecycle.send(secret, source=source, body={**CHAT, "model": "absent"}).status,
    ]
    refused = [lifecycle.send(secret, source=source) for _ in range(4)]
    assert statuses == [200, 200, 200, 400, 404]
    for answer in refused:
        assert_openai_error(answer, 429, code="rate_limit_exceeded")
    assert len(lifecycle.engine.calls()) == 2
    # The marker's request is counted after everything above was: once the store shows
    # it, it shows whatever the refusals would have added.
    assert lifecycle.send(marker_secret).status == 200
    deadline = time.monotonic() + 10
    while (usage := lifecycle.usage())[marker]["requests"] < 1:
        assert time.monotonic() < deadline, usage[marker]
        time.sleep(0.2)
    assert (usage[limited]["requests"], usage[limited]["tokens"]) == (2, 10)  # 5 per reply


# -- revocation: within the stated bound ---------------------------------------------


def test_revocation_takes_effect_within_the_refresh_interval(tmp_path: Path) -> None:
    port = free_port()
    with RecordingEngine(kind="vllm") as engine:
        config = _write_config(tmp_path, engine, port, refresh="300ms")
        with gateway_before(engine, tmp_path, config.read_text(), port=port) as gateway:
            lifecycle = Lifecycle(gateway, engine, revoked="")
            key_id, secret = lifecycle.new_key("soon-revoked")
            assert lifecycle.send(secret).status == 200
            revoked = run_cli(lifecycle.config, "keys", "revoke", key_id)
            assert revoked.code == 0 and "refuse it within 0.3s" in revoked.out
            deadline = time.monotonic() + 10
            while (answer := lifecycle.send(secret)).status == 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert_openai_error(answer, 401, code="revoked_api_key")
            forwarded = len(engine.calls())
            assert lifecycle.send(secret, header="x-api-key").status == 401
            assert len(engine.calls()) == forwarded
