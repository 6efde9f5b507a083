"""The command line: validate exit codes and output, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flm_gateway", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_validate_ok() -> None:
    result = run_cli("validate", "flm.yaml.example")
    assert result.returncode == 0, result.stderr
    assert "valid (2 listener(s), 2 engine(s), 2 route(s))" in result.stdout


def test_validate_reports_every_error_with_position_and_no_traceback() -> None:
    result = run_cli("validate", "tests/config/golden/schema_errors.yaml")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5
    assert all(line.startswith("tests/config/golden/schema_errors.yaml:") for line in lines)
    assert "Traceback" not in result.stdout + result.stderr


def test_run_refuses_an_invalid_file_the_same_way() -> None:
    result = run_cli("run", "--config", "tests/config/golden/semantic_errors.yaml")
    assert result.returncode == 1
    assert (
        "semantic_errors.yaml:9:18: listeners[2].passthrough: unknown engine 'nowhere'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_config_option_on_validate_and_default_path(tmp_path: Path) -> None:
    assert run_cli("validate", "--config", str(ROOT / "flm.yaml.example")).returncode == 0
    missing = run_cli("validate", cwd=tmp_path)
    assert missing.returncode == 1
    assert "flm.yaml:1:1: cannot read the file" in missing.stdout


def test_run_reports_a_config_that_cannot_be_applied_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "flm.yaml"
    config.write_text(
        "listeners:\n  - name: a\n    bind: 127.0.0.1:18555\n    tls:\n      mode: https-acme\n"
        "      domains: [gw.test]\n      acme: {directory: 'https://127.0.0.1:1/dir', "
        "ca_bundle: /nonexistent.pem, http_port: 18556}\n"
        f"server: {{state_dir: {tmp_path / 'state'}}}\n"
    )
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 1
    assert (
        f"cannot serve the config: {config}:7:63: listeners[0].tls.acme.ca_bundle: cannot read "
        "/nonexistent.pem: No such file or directory" in result.stderr
    )
    assert "Traceback" not in result.stderr


STAGED = "tests/config/golden/staged_errors.yaml"
STAGED_EXPECTED = (
    f"{STAGED}:21:5: routes[0].fallbak: unknown key 'fallbak'",
    f"{STAGED}:23:13: routes[1].engine: unknown engine 'gamma'",
    f"{STAGED}:32:13: security.keys[0].hash: 'sha256:abc'... is not sha256:<64 lowercase hex>",
)


def test_validate_reports_schema_reference_and_key_errors_in_one_run() -> None:
    result = run_cli("validate", STAGED)
    assert result.returncode == 1
    for expected in STAGED_EXPECTED:
        assert any(line.startswith(expected) for line in result.stdout.splitlines()), expected
    assert "8 problem(s)" in result.stderr


@pytest.mark.parametrize(
    ("command", "outcome"),
    [("run", "nothing was started"), ("reload", "the running gateway was not asked to reload")],
)
def test_run_and_reload_report_every_stage_too(command: str, outcome: str) -> None:
    result = run_cli(command, "--config", STAGED)
    assert result.returncode == 1
    for expected in STAGED_EXPECTED:
        assert expected in result.stderr
    assert outcome in result.stderr


def test_validate_prints_warnings_and_where_keys_are_required(tmp_path: Path) -> None:
    config = tmp_path / "flm.yaml"
    config.write_text(
        "listeners:\n"
        "  - {name: lan, bind: '0.0.0.0:18601', auth: api-key}\n"
        "  - {name: local, bind: '127.0.0.1:18602'}\n"
        "engines:\n"
        "  - {name: cpp, kind: llamacpp, url: 'http://127.0.0.1:8080/v1'}\n"
    )
    result = run_cli("validate", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{config}:5:38: warning: engines[0].url: ")
    assert "using 'http://127.0.0.1:8080'" in lines[0]
    assert f"{config}: API keys are required on: lan" in lines
    assert f"{config}: no API key is needed on: local (loopback, no auth:)" in lines
    assert any(line.startswith(f"{config}: note: this file declares no API key") for line in lines)
    assert lines[-1].endswith("valid (2 listener(s), 1 engine(s), 0 route(s)), 1 warning(s)")


def test_validate_runs_every_addon_and_refuses_what_a_start_refuses(tmp_path: Path) -> None:
    """The loader accepts the file; the TLS addon refuses a garbage `ca_bundle` and a garbage
    stored key. `validate` lists both with their positions, like the loader's problems."""
    (tmp_path / "bundle.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    stored = tmp_path / "state" / "tls" / "listeners" / "dev"
    stored.mkdir(parents=True)
    (stored / "cert.pem").write_text("junk\n")
    (stored / "key.pem").write_text("junk\n")
    (stored / "key.pem").chmod(0o600)
    config = tmp_path / "flm.yaml"
    config.write_text(
        "server: {state_dir: ./state}\nlisteners:\n  - name: a\n    bind: 127.0.0.1:18555\n"
        "    tls:\n      mode: https-acme\n      domains: [gw.test]\n"
        "      acme: {directory: 'https://127.0.0.1:1/dir', ca_bundle: bundle.pem, "
        "http_port: 18556}\n  - name: dev\n    bind: 127.0.0.1:18557\n"
        "    tls: {mode: dev-selfsigned}\n"
    )
    result = run_cli("validate", str(config))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{config}:8:63: listeners[0].tls.acme.ca_bundle: {tmp_path / 'bundle.pem'} holds no "
        "PEM certificate",
        f"{config}:11:17: listeners[1].tls.mode: dev-selfsigned: the stored key or certificate "
        f"cannot be used: {stored / 'key.pem'}: not a PEM private key",
    ]
    assert f"{config}: 2 problem(s)" in result.stderr
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["tls"]  # nothing written
    started = run_cli("run", "--config", str(config))
    assert started.returncode == 1
    assert f"cannot serve the config: {config}:8:63: listeners[0].tls.acme.ca_bundle" in (
        started.stderr
    )
    assert f"cannot serve the config: {config}:11:17: listeners[1].tls.mode" in started.stderr


def test_validate_binds_no_socket(tmp_path: Path) -> None:
    """`validate` is a start without sockets: preparing every addon of a config with an ACME
    listener (whose client goes through the egress bridge) opens no listening socket."""
    import psutil

    from flm_gateway.app.gateway import serving_problems
    from flm_gateway.config import load_config

    config = tmp_path / "flm.yaml"
    config.write_text(
        "server: {state_dir: ./state}\nlisteners:\n  - name: a\n    bind: 127.0.0.1:18555\n"
        "    tls:\n      mode: https-acme\n      domains: [gw.test]\n"
        "      acme: {directory: 'https://127.0.0.1:1/dir', http_port: 18556}\n"
    )
    me = psutil.Process()

    def listening() -> set[tuple[str, int]]:
        return {
            (c.laddr.ip, c.laddr.port)
            for c in me.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }

    before = listening()
    assert serving_problems(load_config(config)) == []
    assert listening() == before
