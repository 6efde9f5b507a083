"""`flm-gateway engines detect`: options, table, JSON, cache (in-process `main`)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from flm_gateway.cli import main
from flm_gateway.cli.engines_command import parse_ports
from flm_gateway.config.engine_settings import EngineKind
from tests.support.fake_engines import start_fake_engine_process
from tests.support.gateway_process import free_port

CONFIG = """\
version: 1
server: {state_dir: STATE}
listeners: [{name: main, bind: "127.0.0.1:8088"}]
engines:
  - {name: remote, kind: vllm, url: "http://127.0.0.1:GONE", api_key: sk-hidden}
detection:
  ports: {ollama: OLLAMA, vllm: null, lmstudio: null, llamacpp: LLAMA}
"""


def write(tmp_path: Path, ollama: int, llama: int) -> Path:
    path = tmp_path / "flm.yaml"
    path.write_text(
        CONFIG.replace("STATE", str(tmp_path / "state"))
        .replace("GONE", str(free_port()))
        .replace("OLLAMA", str(ollama))
        .replace("LLAMA", str(llama))
    )
    return path


def test_table_json_and_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "llama-server"
    program.write_text("#!/bin/sh\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    with start_fake_engine_process("ollama", ["llama3.2"]) as (_, url):
        config = write(tmp_path, int(url.rsplit(":", 1)[1]), free_port())
        assert main(["engines", "detect", "--config", str(config)]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == ["NAME", "KIND", "STATE", "URL", "VERSION", "MODELS", "DETAIL"]
        rows = {line.split()[0]: line.split()[:3] for line in table[1:]}
        assert rows == {
            "remote": ["remote", "vllm", "unreachable"],
            "ollama": ["ollama", "ollama", "running-healthy"],
            "llamacpp": ["llamacpp", "llamacpp", "installed-only"],
        }
        assert "sk-hidden" not in "\n".join(table)
    # the engine is gone, but the cached answer is given until --refresh
    assert main(["engines", "detect", "--config", str(config), "--json"]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert cached["cached"] is True
    assert {e["name"]: e["state"] for e in cached["engines"]}["ollama"] == "running-healthy"
    assert main(["engines", "detect", "--config", str(config), "--json", "--refresh"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["cached"] is False
    assert {e["name"]: e["state"] for e in fresh["engines"]}["ollama"] == "not-found"
    cache_text = (tmp_path / "state" / "cache" / "engines-detect.json").read_text()
    assert "sk-hidden" not in cache_text


def test_port_options_override_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    config = write(tmp_path, free_port(), free_port())
    silent = free_port()
    args = ["engines", "detect", "--config", str(config), "--json", "--refresh"]
    assert main([*args, "--port", f"vllm={silent}", "--port", "ollama=none"]) == 0
    found = {e["name"]: e for e in json.loads(capsys.readouterr().out)["engines"]}
    assert set(found) == {"remote", "vllm", "llamacpp"}
    assert found["vllm"]["url"] == f"http://127.0.0.1:{silent}"
    assert found["vllm"]["state"] == "not-found"


def test_parse_ports_errors() -> None:
    assert parse_ports(["vllm=8001", "ollama=none"]) == {
        EngineKind.VLLM: 8001,
        EngineKind.OLLAMA: None,
    }
    with pytest.raises(ValueError, match="unknown kind 'vlm'; kinds: ollama, vllm"):
        parse_ports(["vlm=1"])
    with pytest.raises(ValueError, match="PORT 1-65535"):
        parse_ports(["vllm=99999"])


def test_bad_port_option_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, free_port(), free_port())
    assert main(["engines", "detect", "--config", str(config), "--port", "x"]) == 1
    assert "unknown kind 'x'" in capsys.readouterr().err


EGRESS_CONFIG = """\
version: 1
server: {state_dir: STATE}
listeners: [{name: main, bind: "127.0.0.1:8088"}]
egress:
  bastion: {mode: socks5, url: "socks5://127.0.0.1:PROXY", fail: closed}
engines:
  - {name: hidden, kind: ollama, url: ENGINE_URL, egress: bastion}
detection:
  ports: {ollama: null, vllm: null, lmstudio: null, llamacpp: null}
"""


def test_declared_engines_are_reached_through_their_egress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running engine behind a fail-closed SOCKS profile whose proxy is down is
    unreachable for detection too: it is never dialled directly."""
    with start_fake_engine_process("ollama", ["llama3.2"]) as (_, url):
        config = tmp_path / "flm.yaml"
        config.write_text(
            EGRESS_CONFIG.replace("STATE", str(tmp_path / "state"))
            .replace("PROXY", str(free_port()))
            .replace("ENGINE_URL", url)
        )
        assert main(["engines", "detect", "--config", str(config), "--json"]) == 0
        [hidden] = json.loads(capsys.readouterr().out)["engines"]
        assert hidden["state"] == "unreachable"
        assert main(["models", "list", "--config", str(config), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["models"] == []
