"""The gateway process imports only the mitmproxy addons it runs (a memory saving)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.gateway_process import ROOT

PROBE = """
import sys
from flm_gateway import mitm_lean
assert mitm_lean.install()
import flm_gateway.gateway
from flm_gateway.config.default import default_config
flm_gateway.gateway.Gateway(default_config())
unused = {"flask", "jinja2", "werkzeug", "ldap3", "acme", "josepy"}
heavy = sorted(unused & {m.split(".")[0] for m in sys.modules})
print(",".join(heavy) or "none")
"""


def test_gateway_imports_no_unused_mitmproxy_addon_or_acme_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"
