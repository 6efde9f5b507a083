"""`flm-gateway ca install|uninstall|export` for real on this (Debian) machine.

After `ca install`, curl without -k trusts the packaged-ca listener; after
`ca uninstall` it does not. The root is always uninstalled, also on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.tls_support import REPO, free_port, gateway

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not sys.platform.startswith("linux")
        or os.geteuid() != 0
        or shutil.which("update-ca-certificates") is None
        or shutil.which("curl") is None,
        reason="needs root on Debian/Ubuntu with update-ca-certificates and curl",
    ),
]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flm_gateway", "ca", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def curl(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--resolve",
            f"gw.lan:{port}:127.0.0.1",
            f"https://gw.lan:{port}/v1/models",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_install_then_curl_trusts_it_and_uninstall_removes_it(tmp_path: Path) -> None:
    port = free_port()
    config = f"""\
server: {{state_dir: ./state}}
listeners:
  - name: lan
    bind: 127.0.0.1:{port}
    tls: {{mode: packaged-ca, hostnames: [gw.lan]}}
"""
    with gateway(config, tmp_path, [port]):
        assert curl(port).returncode == 60  # not trusted yet: SSL certificate problem
        installed = cli("install", "--config", "flm.yaml", cwd=tmp_path)
        try:
            assert installed.returncode == 0, installed.stderr
            assert "into the debian trust store" in installed.stdout
            anchors = list(Path("/usr/local/share/ca-certificates").glob("flm-gateway-root-*.crt"))
            assert anchors
            ok = curl(port)
            assert ok.returncode == 0, ok.stderr
            assert '"object": "list"' in ok.stdout
        finally:
            removed = cli("uninstall", "--config", "flm.yaml", cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
        assert "from the debian trust store" in removed.stdout
        after = curl(port)
        assert after.returncode == 60, after.stdout + after.stderr
    exported = tmp_path / "root.pem"
    result = cli("export", str(exported), "--config", "flm.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert exported.read_bytes() == (tmp_path / "state/tls/packaged-ca/root.pem").read_bytes()
    assert b"PRIVATE KEY" not in exported.read_bytes()
