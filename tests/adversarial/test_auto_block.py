"""Class 11: auto-block never locks out loopback.

The issue: one `curl /.env` from the machine blocked 127.0.0.1 for 10 minutes,
valid keys included. Now `security.auto_block.never_block` (loopback by default,
as fail2ban's `ignoreip`) is never blocked, whatever the reason (honeypot, wrong
keys, intrusions), while its events are still audited, and an `ip.not_blocked`
event records the block that was not made. The address that counts is the client
after `client_ip`: clients behind a trusted proxy on loopback are blocked, and a
client cannot claim loopback through `X-Forwarded-For`. A custom list replaces the
default: an address left out of it (another 127.x here, since tests only have
loopback) is blocked.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flm_gateway.cli import main as cli_main
from flm_gateway.security.keys import hash_secret
from tests.adversarial.harness import Answer, assert_openai_error, exchange, port_of, request
from tests.support.gateway_process import GatewayProcess, run_gateway
from tests.support.recording_engine import RecordingEngine

SECRET = "flm-adversarial-auto-block-valid-key"
CONFIG = f"""\
server: {{state_dir: "{{state_dir}}"}}
state: {{refresh_interval: 200ms}}
listeners:
  - {{name: main, bind: "127.0.0.1:{{port}}", auth: api-key}}
engines:
  - {{name: rec, kind: ollama, url: "ENGINE_URL"}}
routes:
  - {{model: tiny, engine: rec}}
security:
  keys:
    - {{id: ci, hash: "{hash_secret(SECRET)}"}}
  ip: {{trusted_proxies: [127.0.0.3]}}
"""
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
PROXY = "127.0.0.3"


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingEngine]:
    with RecordingEngine(kind="ollama", models=("tiny",)) as running:
        yield running


def _gateway(
    engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory, extra: str
) -> Iterator[GatewayProcess]:
    config = CONFIG.replace("ENGINE_URL", engine.url) + extra
    with run_gateway(config, tmp_path_factory.mktemp("auto-block")) as running:
        yield running


@pytest.fixture(scope="module")
def default_gateway(
    engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    yield from _gateway(engine, tmp_path_factory, "")


@pytest.fixture(scope="module")
def custom_gateway(
    engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    yield from _gateway(engine, tmp_path_factory, "  auto_block: {never_block: [127.0.0.1]}\n")


def chat(gateway: GatewayProcess, source: str, forwarded_for: str | None = None) -> Answer:
    headers = {"Authorization": f"Bearer {SECRET}"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    data = request("POST", "/v1/chat/completions", headers=headers, json_body=CHAT)
    return exchange(port_of(gateway), data, source=source)


def probe(
    gateway: GatewayProcess, target: str, source: str, headers: dict[str, str] | None = None
) -> Answer:
    return exchange(port_of(gateway), request("GET", target, headers=headers), source=source)


def cli(gateway: GatewayProcess, *args: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main([*args, "--json", "--config", str(gateway.config_path)])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())


def audited(gateway: GatewayProcess, type_: str, ip: str, count: int = 1) -> list[Any]:
    """The audit events of `type_` from `ip`, once at least `count` are written."""
    deadline = time.monotonic() + 10
    while True:
        events = cli(gateway, "security", "audit", "--type", type_, "--ip", ip)
        if len(events) >= count or time.monotonic() > deadline:
            return list(events)
        time.sleep(0.2)


def blocks(gateway: GatewayProcess) -> set[str]:
    time.sleep(0.5)  # blocks are written to the store in the background
    return {block["cidr"] for block in cli(gateway, "security", "blocklist", "list")}


def test_curl_env_from_the_machine_does_not_lock_out_its_valid_key(
    default_gateway: GatewayProcess, engine: RecordingEngine
) -> None:
    decoy = probe(default_gateway, "/.env", "127.0.0.1")
    assert decoy.status == 200 and b"DB_PASSWORD" in decoy.body
    before = len(engine.calls())
    assert chat(default_gateway, "127.0.0.1").status == 200
    assert [seen.path for seen in engine.calls()[before:]] == ["/v1/chat/completions"]
    (hit,) = audited(default_gateway, "honeypot.hit", "127.0.0.1")
    assert hit["details"]["honeypot"] == "/.env"
    (spared,) = audited(default_gateway, "ip.not_blocked", "127.0.0.1")
    assert (spared["details"]["cidr"], spared["details"]["reason"]) == ("127.0.0.1/32", "honeypot")
    assert "127.0.0.1/32" not in blocks(default_gateway)


@pytest.mark.parametrize(
    ("source", "offence"),
    [
        ("127.0.0.1", "auth"),  # five wrong keys
        ("127.0.0.1", "intrusion"),  # three intrusion hits with action block
        ("127.45.6.7", "honeypot"),  # all of 127.0.0.0/8 is loopback
        ("127.45.6.7", "auth"),
    ],
)
def test_no_reason_blocks_loopback(
    default_gateway: GatewayProcess, engine: RecordingEngine, source: str, offence: str
) -> None:
    if offence == "auth":
        wrong = request("GET", "/v1/models", headers={"Authorization": "Bearer flm-wrong"})
        for _ in range(6):
            assert_openai_error(exchange(port_of(default_gateway), wrong, source=source), 401)
    elif offence == "intrusion":
        for _ in range(4):
            attack = probe(default_gateway, "/v1/models?q=1%20union%20select%202", source)
            assert_openai_error(attack, 403, code="request_rejected")
    else:
        assert probe(default_gateway, "/wp-admin/", source).status == 200
    assert chat(default_gateway, source).status == 200
    assert audited(default_gateway, "ip.not_blocked", source)
    assert f"{source}/32" not in blocks(default_gateway)


def test_clients_behind_a_trusted_proxy_on_loopback_are_blocked_not_the_proxy(
    default_gateway: GatewayProcess,
) -> None:
    gateway = default_gateway
    assert probe(gateway, "/.env", PROXY, {"X-Forwarded-For": "198.51.100.7"}).status == 200
    blocked = chat(gateway, PROXY, forwarded_for="198.51.100.7")
    assert_openai_error(blocked, 403, code="ip_blocked")
    assert chat(gateway, PROXY, forwarded_for="198.51.100.8").status == 200  # another client
    assert chat(gateway, PROXY).status == 200  # the proxy itself
    # A client that claims loopback: the proxy appends its real address, which counts.
    claimed = "127.0.0.1, 198.51.100.9"
    assert probe(gateway, "/.env", PROXY, {"X-Forwarded-For": claimed}).status == 200
    assert_openai_error(chat(gateway, PROXY, forwarded_for=claimed), 403, code="ip_blocked")
    assert {"198.51.100.7/32", "198.51.100.9/32"} <= blocks(gateway)


def test_forwarded_for_from_an_untrusted_peer_changes_nothing(
    default_gateway: GatewayProcess,
) -> None:
    gateway = default_gateway
    headers = {"X-Forwarded-For": "198.51.100.10"}
    assert probe(gateway, "/.env", "127.0.0.4", headers).status == 200
    assert chat(gateway, "127.0.0.4", forwarded_for="198.51.100.10").status == 200
    assert chat(gateway, PROXY, forwarded_for="198.51.100.10").status == 200
    assert not {"127.0.0.4/32", "198.51.100.10/32"} & blocks(gateway)


def test_a_custom_list_replaces_loopback_and_blocks_the_rest(
    custom_gateway: GatewayProcess, engine: RecordingEngine
) -> None:
    gateway = custom_gateway
    assert probe(gateway, "/.env", "127.0.0.2").status == 200
    before = len(engine.calls())
    assert_openai_error(chat(gateway, "127.0.0.2"), 403, code="ip_blocked")
    assert len(engine.calls()) == before
    assert probe(gateway, "/.env", "127.0.0.1").status == 200
    assert chat(gateway, "127.0.0.1").status == 200
    assert audited(gateway, "honeypot.hit", "127.0.0.2")
    assert audited(gateway, "ip.blocked", "127.0.0.2")
    assert audited(gateway, "ip.not_blocked", "127.0.0.1")
    current = blocks(gateway)
    assert "127.0.0.2/32" in current and "127.0.0.1/32" not in current
