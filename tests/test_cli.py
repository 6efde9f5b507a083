"""The command line: validate exit codes and output, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
        "cannot apply the config: listener a: acme.ca_bundle /nonexistent.pem does not exist"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
