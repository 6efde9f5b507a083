"""`flm-gateway validate --effective`: the effective policy as JSON on stdout (`caddy adapt`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flm_gateway.config import load_config
from flm_gateway.observability.effective_policy import render_effective_policy
from tests.golden.cases import CASES, split_case

ROOT = Path(__file__).parents[2]


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flm_gateway", "validate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_effective_prints_only_the_policy_on_stdout(tmp_path: Path) -> None:
    yaml_text, expected = split_case((CASES / "token_caps.flmtest").read_text(encoding="utf-8"))
    config = tmp_path / "flm.yaml"
    config.write_text(yaml_text)
    result = validate("--effective", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert f"{config}: valid (3 listener(s), 1 engine(s), 3 route(s))" in result.stderr
    assert "API keys are required on: main, partner" in result.stderr


def test_effective_on_the_example_file() -> None:
    result = validate("--effective", "--config", "flm.yaml.example")
    assert result.returncode == 0, result.stderr
    policy = json.loads(result.stdout)
    assert result.stdout == render_effective_policy(load_config(ROOT / "flm.yaml.example").config)
    assert policy["admin_endpoints"]["ollama-dropin"]["refused"]


def test_effective_prints_no_policy_for_an_invalid_file() -> None:
    result = validate("--effective", "tests/config/golden/schema_errors.yaml")
    assert result.returncode == 1
    assert "{" not in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
