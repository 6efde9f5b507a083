"""The loader: golden files (config beside its expected errors), ${VAR}, the example file."""

from __future__ import annotations

from pathlib import Path

import pytest

from flm_gateway.config import ConfigError, load_config, parse_config
from flm_gateway.config.default import default_config

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("errors_file", sorted(GOLDEN.glob("*.errors")), ids=lambda p: p.stem)
def test_golden_errors(errors_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN)
    monkeypatch.delenv("BETA_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(Path(errors_file.stem + ".yaml"))
    rendered = "\n".join(str(problem) for problem in caught.value.problems) + "\n"
    assert rendered == errors_file.read_text()


def test_issue2_reference_config_validates_exactly_as_written() -> None:
    loaded = load_config(GOLDEN / "issue2_reference.yaml", environ={"BETA_KEY": "sk-beta"})
    config = loaded.config
    assert [e.name for e in config.engines] == ["alpha", "beta"]
    assert config.engines[1].api_key == "sk-beta"
    chat = config.routes[1]
    assert (chat.upstream_model, chat.engines, chat.defaults.fields("chat")) == (
        "small-7b",
        ["beta"],
        {"temperature": 0.2},
    )
    assert [t.engine for t in chat.fallback_targets] == ["alpha"]
    assert chat.system_prompt == "You are terse."


def test_env_default_syntax() -> None:
    text = (
        "listeners: [{name: m, bind: '127.0.0.1:1'}]\n"
        "engines: [{name: e, url: 'http://h:1', api_key: '${K:-fallback}'}]\n"
    )
    config, _ = parse_config(text, environ={})
    assert config.engines[0].api_key == "fallback"
    config, _ = parse_config(text, environ={"K": "set"})
    assert config.engines[0].api_key == "set"


def test_empty_file_and_non_mapping() -> None:
    with pytest.raises(ConfigError, match="the file is empty"):
        parse_config("", environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- a\n- b\n", environ={})


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert str(caught.value).startswith(f"{tmp_path / 'nope.yaml'}:1:1: cannot read the file")


def test_example_file_documents_a_valid_config() -> None:
    loaded = load_config(ROOT / "flm.yaml.example", environ={})
    assert loaded.config.listeners[0].name == "main"


def test_relative_state_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "flm.yaml"
    path.write_text("listeners: [{name: m, bind: '127.0.0.1:1'}]\nserver: {state_dir: state}\n")
    assert load_config(path, environ={}).state_dir == tmp_path / "state"


def test_builtin_default_listens_on_8088_with_every_engine_kind() -> None:
    config = default_config().config
    assert config.listeners[0].bind == ("127.0.0.1", 8088)
    assert sorted(e.kind.value for e in config.engines) == [
        "llamacpp",
        "lmstudio",
        "ollama",
        "vllm",
    ]
    assert config.routes == []


def test_container_config_and_dockerfile_agree() -> None:
    config = load_config(ROOT / "docker" / "flm.yaml", environ={}).config
    dockerfile = (ROOT / "Dockerfile").read_text()
    port = config.listeners[0].bind[1]
    assert f"EXPOSE {port} {config.admin.bind[1]}" in dockerfile
    assert f"127.0.0.1:{port}/healthz" in dockerfile
    assert "\nUSER flm\n" in dockerfile and "/etc/flm-gateway/flm.yaml" in dockerfile
