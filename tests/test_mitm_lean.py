"""The serving process imports only what it runs (a memory saving: docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.gateway_process import ROOT

PROBE = """
import sys
from flm_gateway import cli
from flm_gateway.proxy import mitm_lean
assert mitm_lean.install()
cli.build_parser()  # every command module, as `flm-gateway run` imports them
import flm_gateway.app.gateway
from flm_gateway.config.default import default_config
flm_gateway.app.gateway.Gateway(default_config())
unused = {
    "flask", "jinja2", "werkzeug", "ldap3",  # mitmproxy addons we do not run
    "acme", "josepy",  # https-acme listeners only
    "aiohttp", "prometheus_client",  # replaced by flm_gateway.httpio and .prometheus
    "urllib.request", "tarfile",  # the chat and backup commands only
    "redis",  # state.backend: redis only (state store, shared rate limits)
}
loaded = sorted(name for name in unused if name in sys.modules)
print(",".join(loaded) or "none")
"""


def test_gateway_imports_no_unused_mitmproxy_addon_or_library() -> None:
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
