"""Which listeners require an API key is decided by flm.yaml alone, end to end: a real
gateway process, keys created and revoked with the CLI while it runs, the official
`openai` SDK as the client (the README's `api_key="unused-on-loopback"` example).
The engine URL is written with /v1, which the loader corrects (with a warning)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.fake_engines import start_fake_engine_process
from tests.support.gateway_process import ROOT, GatewayProcess, free_port, run_gateway

CONFIG = """\
server: {state_dir: "{state_dir}"}
admin: {enabled: false}
listeners:
  - {name: local, bind: "127.0.0.1:{port}"}
  - {name: keyed, bind: "127.0.0.1:KEYED_PORT", auth: api-key}
engines:
  - {name: alpha, kind: vllm, url: "ALPHA_URL/v1"}
routes:
  - {model: tiny-a, engine: alpha}
"""


def keys(gateway: GatewayProcess, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flm_gateway", "keys", *args, "--config", str(gateway.config_path)],
        cwd=gateway.config_path.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(gateway.config_path.parent)},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def chat(base_url: str, api_key: str) -> str:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0)
    reply = client.chat.completions.create(
        model="tiny-a", messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content or ""


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[GatewayProcess, str]]:
    keyed_port = free_port()
    with start_fake_engine_process("vllm", ["tiny-a"]) as (_, alpha_url):
        config = CONFIG.replace("ALPHA_URL", alpha_url).replace("KEYED_PORT", str(keyed_port))
        with run_gateway(config, tmp_path) as process:
            yield process, f"http://127.0.0.1:{keyed_port}"


def test_keys_change_no_listener_and_the_readme_example_stays_true(
    gateway: tuple[GatewayProcess, str],
) -> None:
    process, keyed_url = gateway
    log = process.log
    assert "API keys are required on: keyed" in log
    assert "no API key is needed on: local (loopback, no auth:)" in log
    assert "warning: engines[0].url:" in log and "ends in /v1" in log
    assert chat(process.url, "unused-on-loopback")  # /v1 corrected: reaches the engine
    with pytest.raises(openai.AuthenticationError):
        chat(keyed_url, "unused-on-loopback")

    scoped = keys(process, "create", "--name", "scoped", "--scopes", "listener:keyed")
    assert "API keys are required on: keyed" in scoped
    secret = next(line.split(": ", 1)[1] for line in scoped.splitlines() if "secret" in line)
    assert chat(keyed_url, secret)
    assert chat(process.url, "unused-on-loopback")  # a key scoped to keyed changes only keyed
    unscoped = keys(process, "create", "--name", "everywhere")
    assert "no API key is needed on: local" in unscoped
    assert chat(process.url, "unused-on-loopback")

    for created in (scoped, unscoped):
        key_id = created.split()[2]  # "created key key_... (name)"
        keys(process, "revoke", key_id)
    assert chat(process.url, "unused-on-loopback")
    with pytest.raises(openai.AuthenticationError):
        chat(keyed_url, "unused-on-loopback")  # revoking never opens a keyed listener
