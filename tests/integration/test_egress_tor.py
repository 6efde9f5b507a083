"""Egress through a real, offline Tor client, inside a private network namespace.

This test runs `tor_namespace_cases.py` under `unshare -n` (loopback only, brought up
with `ip link set lo up`) with FLM_EGRESS_NETNS=1, so nothing can leave the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway_process import ROOT


def test_tor_suite_in_a_private_network_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a private network namespace")
    if shutil.which("tor") is None and not Path("/usr/sbin/tor").exists():
        pytest.skip("tor is not installed (scripts/test.sh installs it)")
    command = [
        "unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
        str((Path(__file__).parent / "tor_namespace_cases.py").relative_to(ROOT)),
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "FLM_EGRESS_NETNS": "1"},
        capture_output=True,
        text=True,
        timeout=110,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert " passed" in output and " failed" not in output, output
