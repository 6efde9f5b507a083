"""`flm-gateway` with no flm.yaml runs the built-in default and says so first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.gateway_process import ROOT, wait_http_ok


def test_no_flm_yaml_uses_builtin_default_on_8088(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "flm_gateway"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http_ok("http://127.0.0.1:8088/healthz", 20, process)
        with urllib.request.urlopen("http://127.0.0.1:8088/readyz", timeout=5) as response:
            raise AssertionError(f"ready without engines: {response.read()!r}")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        assert json.loads(exc.read())["engines_total"] == 4
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    first_line = output.decode().splitlines()[0]
    assert "no flm.yaml found, using the built-in default config" in first_line
    assert process.returncode == 0
