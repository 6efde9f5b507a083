"""The operations commands' answers when there is nothing to talk to (in process, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flm_gateway.cli import main

CONFIG = 'server: {state_dir: ./state}\nlisteners: [{name: main, bind: "127.0.0.1:8088"}]\n'


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "flm.yaml"
    path.write_text(CONFIG)
    return path


def test_reload_without_a_running_gateway(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reload", "--config", str(config)]) == 2
    assert "no running gateway found" in capsys.readouterr().err


def test_reload_refuses_an_invalid_file(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text(CONFIG + "colour: red\n")
    assert main(["reload", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}:3:1: colour: unknown key 'colour'" in err
    assert "was not asked to reload" in err


def test_logs_before_any_request(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--config", str(config)]) == 1
    assert "no request log yet" in capsys.readouterr().err


def test_logs_rejects_a_bad_filter(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--config", str(config), "--status", "6xx"]) == 2
    assert "use a code (404), a class (5xx) or 'error'" in capsys.readouterr().err


def test_check_lists_every_config_problem(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text("listeners: [{name: main, bind: nope}]\nbogus: 1\n")
    assert main(["check", "--config", str(config)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["FAIL  config " + str(config)] * 2
    assert all("-> fix this line" in line for line in lines[:2])


def test_chat_needs_its_key_variable(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["chat", "--url", "http://127.0.0.1:9", "--key-env", "FLM_TEST_NO_SUCH_VAR"])
    assert code == 2
    assert "FLM_TEST_NO_SUCH_VAR is not set" in capsys.readouterr().err


def test_chat_reports_an_unreachable_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach http://127.0.0.1:9/v1" in capsys.readouterr().err
