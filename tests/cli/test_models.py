"""`flm-gateway models list` against fake Ollama and LM Studio engines (subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flm_gateway.cli import main
from tests.support.fake_engines import start_fake_engine_process
from tests.support.gateway_process import free_port

CONFIG = """\
version: 1
server: {state_dir: STATE}
listeners: [{name: main, bind: "127.0.0.1:8088"}]
engines:
  - {name: ollama, kind: ollama, url: OLLAMA_URL}
  - {name: studio, kind: lmstudio, url: STUDIO_URL}
  - {name: gone, kind: vllm, url: "http://127.0.0.1:GONE", models: [declared-7b]}
routes:
  - {model: fast, engine: ollama, upstream_model: "llama3.2"}
  - {model: "qwen*", engine: studio, fallback: [gone]}
"""


def test_models_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (
        start_fake_engine_process("ollama", ["llama3.2", "nomic-embed-text"]) as (_, ollama),
        start_fake_engine_process("lmstudio", ["qwen3-4b", "gemma-3"]) as (_, studio),
    ):
        config = tmp_path / "flm.yaml"
        config.write_text(
            CONFIG.replace("STATE", str(tmp_path / "state"))
            .replace("OLLAMA_URL", ollama)
            .replace("STUDIO_URL", studio)
            .replace("GONE", str(free_port()))
        )
        assert main(["models", "list", "--json", "--config", str(config)]) == 0
        result = json.loads(capsys.readouterr().out)
        assert main(["models", "list", "--config", str(config)]) == 0
        captured = capsys.readouterr()
    rows = {(m["engine"], m["id"]): m for m in result["models"]}
    llama = rows[("ollama", "llama3.2:latest")]
    assert llama["public_names"] == ["llama3.2:latest", "fast"]
    assert llama["kind"] == "ollama" and isinstance(llama["loaded"], bool)
    qwen = rows[("studio", "qwen3-4b")]
    assert qwen["public_names"] == ["qwen3-4b"]
    assert isinstance(qwen["context_length"], int) and qwen["loaded"] in (True, False)
    # gemma is listed by LM Studio but `qwen*` does not match it: discovery reaches it
    assert rows[("studio", "gemma-3")]["public_names"] == ["gemma-3"]
    # declared on a dead engine: listed, reachable only by name (unknown state)
    declared = rows[("gone", "declared-7b")]
    assert (declared["loaded"], declared["context_length"]) == (None, None)
    states = {e["name"]: e["state"] for e in result["engines"]}
    assert states == {
        "ollama": "running-healthy",
        "studio": "running-healthy",
        "gone": "unreachable",
    }
    assert captured.out.splitlines()[0].split() == [
        "MODEL",
        "ENGINE",
        "CONTEXT",
        "LOADED",
        "PUBLIC",
        "NAMES",
    ]
    assert "fast" in captured.out
    assert "engine gone (vllm): unreachable" in captured.err
