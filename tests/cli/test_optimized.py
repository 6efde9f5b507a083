"""The gateway serves under `python -O` (flm_gateway/cli/optimized.py)."""

from __future__ import annotations

from pathlib import Path

from flm_gateway.cli.optimized import reexec_argv
from tests.support.gateway_process import free_port, run_gateway

CONFIG = """\
version: 1
server: {state_dir: "{state_dir}"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", tls: {mode: local-http}}
engines:
  - {name: engine, kind: vllm, url: "http://127.0.0.1:ENGINE_PORT"}
routes:
  - {model: m, engine: engine}
"""


def test_reexec_adds_o_and_keeps_the_arguments() -> None:
    argv = ["/venv/bin/python", "-X", "dev", "-m", "flm_gateway", "run", "--config", "f"]
    assert reexec_argv(0, "/venv/bin/python", argv) == [
        "/venv/bin/python",
        "-O",
        "-X",
        "dev",
        "-m",
        "flm_gateway",
        "run",
        "--config",
        "f",
    ]


def test_reexec_keeps_the_console_script_form() -> None:
    argv = ["/venv/bin/python", "/venv/bin/flm-gateway", "run"]
    assert reexec_argv(0, "/venv/bin/python", argv) == [
        "/venv/bin/python",
        "-O",
        "/venv/bin/flm-gateway",
        "run",
    ]


def test_no_reexec_when_already_optimized_or_unknown() -> None:
    assert reexec_argv(1, "/venv/bin/python", ["/venv/bin/python", "-m", "x"]) is None
    assert reexec_argv(2, "/venv/bin/python", ["/venv/bin/python", "-m", "x"]) is None
    assert reexec_argv(0, "", ["python", "-m", "x"]) is None
    assert reexec_argv(0, "/venv/bin/python", ["python"]) is None


def test_the_served_gateway_runs_optimized_in_the_same_process(tmp_path: Path) -> None:
    config = CONFIG.replace("ENGINE_PORT", str(free_port()))
    with run_gateway(config, tmp_path) as gateway:
        # The pid the test started is the one serving (execv keeps it), now under -O.
        cmdline = Path(f"/proc/{gateway.process.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1] == b"-O"
        assert b"flm_gateway" in cmdline and b"run" in cmdline
