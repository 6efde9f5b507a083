"""A second gateway on the same state directory or port refuses to start and names the
gateway (pid) that already serves it; it writes no empty log line and leaves the first
one's state alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.gateway_process import ROOT, free_port, run_gateway

CONFIG = """\
server: {state_dir: "{state_dir}"}
admin: {enabled: false}
listeners:
  - {name: main, bind: "127.0.0.1:{port}"}
engines:
  - {name: alpha, kind: vllm, url: "http://127.0.0.1:{engine}"}
"""


def run_second(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flm_gateway", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "HOME": str(cwd), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def assert_no_empty_lines(log: str) -> None:
    for line in log.splitlines():
        assert not line.rstrip().endswith(":"), f"empty log line: {line!r}"


def test_the_same_state_directory_is_refused(tmp_path: Path) -> None:
    text = CONFIG.replace("{engine}", str(free_port()))
    with run_gateway(text, tmp_path) as first:
        second_config = tmp_path / "second.yaml"
        second_config.write_text(
            text.replace("{port}", str(free_port())).replace("{state_dir}", str(tmp_path / "state"))
        )
        result = run_second(second_config, tmp_path)
        pid = first.process.pid
    assert result.returncode == 1
    assert (
        f"state directory {tmp_path / 'state'} is in use by flm-gateway pid {pid}" in result.stderr
    )
    assert "state store" not in result.stderr  # refused before it opened the state
    assert "127.0.0.1:9" not in result.stderr
    assert_no_empty_lines(result.stderr)


def test_a_port_served_by_another_gateway_is_named(tmp_path: Path) -> None:
    port = free_port()
    text = CONFIG.replace("{engine}", str(free_port()))
    (tmp_path / "one").mkdir()
    with run_gateway(text, tmp_path / "one", port=port) as first:
        second_config = tmp_path / "second.yaml"
        second_config.write_text(
            text.replace("{port}", str(port)).replace("{state_dir}", str(tmp_path / "two"))
        )
        result = run_second(second_config, tmp_path)
        pid = first.process.pid
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use by flm-gateway pid {pid}" in result.stderr
    assert "127.0.0.1:9" not in result.stderr  # mitmproxy's placeholder target stays hidden
    assert_no_empty_lines(result.stderr)


def test_a_state_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "flm.yaml"
    config.write_text(
        CONFIG.replace("{engine}", str(free_port()))
        .replace("{port}", str(free_port()))
        .replace("{state_dir}", str(tmp_path / "a-file" / "state"))
    )
    result = run_second(config, tmp_path)
    assert result.returncode == 1
    assert (
        f"cannot lock the state directory {tmp_path / 'a-file' / 'state'}: Not a directory"
        in result.stderr
    )
