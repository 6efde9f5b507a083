"""What an operator sees when the gateway starts and stops.

At start, every engine's first health check is logged, a down engine too (name,
URL, reason). An idle gateway stops at once on SIGTERM: no request in flight
means nothing to drain, even with idle keep-alive client connections open.
The bound is generous (1 s, measured about 0.05 s): what it catches is a wait
that does not belong there (a drain, a poll, a timeout) on the idle path.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.integration.ops_helpers import http_get, threaded_engine, wait_for_log
from tests.support.gateway_process import free_port, run_gateway

pytestmark = pytest.mark.timeout(60)

CONFIG = """\
server: {{state_dir: "{state_dir}"}}
admin: {{bind: "127.0.0.1:{admin}"}}
listeners:
  - {{name: main, bind: "127.0.0.1:{port}"}}
  - {{name: lan, bind: "127.0.0.1:{lan}", tls: {{mode: packaged-ca}}}}
engines:
  - {{name: alpha, kind: vllm, url: "{alpha}"}}
  - {{name: gone, kind: openai, url: "http://127.0.0.1:{gone}", models: [ghost]}}
"""

IDLE_STOP_BOUND = 1.0


def test_start_logs_every_engine_and_an_idle_stop_is_immediate(tmp_path: Path) -> None:
    with threaded_engine("vllm", ["tiny-a"]) as alpha:
        port, admin, lan, gone = free_port(), free_port(), free_port(), free_port()
        config = CONFIG.format(
            state_dir=tmp_path / "state",
            admin=admin,
            port=port,
            lan=lan,
            alpha=alpha.url,
            gone=gone,
        )
        with run_gateway(
            config, tmp_path, port=port, health_url=f"http://127.0.0.1:{admin}/healthz"
        ) as gateway:
            log = wait_for_log(gateway, "engine gone is unreachable")
            [down] = [line for line in log.splitlines() if "engine gone is" in line]
            assert "WARNING" in down and "connection refused" in down
            assert down.endswith(f"(at http://127.0.0.1:{gone})")
            # Each engine's first check logs when it ends, in either order.
            log = wait_for_log(gateway, f"engine alpha is running-healthy: ok (at {alpha.url})")

            # Idle: one answered request on a connection kept open, one connection that
            # never sent a byte, one kept open on the admin listener.
            kept = socket.create_connection(("127.0.0.1", port), 5)
            kept.sendall(f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert kept.recv(65536).startswith(b"HTTP/1.1 200")
            silent = socket.create_connection(("127.0.0.1", lan), 5)
            assert http_get(f"http://127.0.0.1:{admin}/healthz")[0] == 200
            try:
                started = time.monotonic()
                gateway.signal(signal.SIGTERM)
                returncode = gateway.process.wait(10)
                took = time.monotonic() - started
            finally:
                kept.close()
                silent.close()
            assert returncode == 0, gateway.log
            assert took < IDLE_STOP_BOUND, f"idle SIGTERM took {took:.3f}s"
            assert "draining" not in gateway.log and "stopped" in gateway.log
