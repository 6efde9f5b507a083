"""`server.workers` at start: a port another process holds stops the start, even when that
process set SO_REUSEPORT (which the workers' own sockets would otherwise silently join);
workers that cannot start (here: their state store refuses) stop it too, with exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.support.gateway_process import ROOT, free_port

CONFIG = """\
server: {{state_dir: "{state}", workers: 2}}
state: {{backend: redis, redis_url: "redis://127.0.0.1:1/0"}}
admin: {{enabled: false}}
listeners:
  - {{name: main, bind: "127.0.0.1:{port}", tls: {{mode: local-http}}}}
"""


def _run(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flm_gateway", "run", "--config", str(config)],
        env={"PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_workers_that_cannot_start_stop_the_start(tmp_path: Path) -> None:
    config = tmp_path / "flm.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state", port=free_port()))
    result = _run(config, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "worker 1 started" in result.stderr and "worker 2 started" in result.stderr
    assert "worker(s) 1, 2 did not start; stopping" in result.stderr
    assert not (tmp_path / "state" / "gateway.pid").exists()


def test_a_port_held_with_so_reuseport_stops_the_start(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "flm.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state", port=port))
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = _run(config, tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"listener 'main': port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "worker 1 started" not in result.stderr  # refused before any worker ran
