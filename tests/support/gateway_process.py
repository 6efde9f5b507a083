"""Run the real `flm-gateway` process for integration tests.

`run_gateway(config_text, tmp_path)` writes the config, starts
`python -m flm_gateway run --config FILE` (PYTHONPATH = repo root), waits up to
`START_TIMEOUT` seconds for `/healthz` on the first listener, and on exit sends
SIGTERM, waits, then kills. The process's log is kept for assertions.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
START_TIMEOUT = 20.0


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and never one this test
    process handed out before: the kernel may give a port it just freed again, and a test
    asking for two ports (two listeners) would get the same one twice."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    url: str
    config_path: Path
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def wait_http_ok(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except Exception as exc:  # still starting
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s: {last}")


@contextmanager
def run_gateway(
    config_text: str,
    tmp_path: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    health_url: str | None = None,
    open_files: tuple[int, int] | None = None,
) -> Iterator[GatewayProcess]:
    """Start the gateway with `config_text` ({port} and {state_dir} are filled in);
    `open_files` = (soft, hard) open-file limit the process starts with."""
    port = port or free_port()
    state_dir = tmp_path / "state"
    config_path = tmp_path / "flm.yaml"
    config_path.write_text(
        config_text.replace("{port}", str(port)).replace("{state_dir}", str(state_dir))
    )
    log_path = tmp_path / "gateway.log"
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "HOME": str(tmp_path),
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "flm_gateway", "run", "--config", str(config_path), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=tmp_path,
            preexec_fn=(
                (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, open_files))
                if open_files is not None
                else None
            ),
        )
    gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", config_path, log_path)
    try:
        wait_http_ok(health_url or gateway.url + "/healthz", START_TIMEOUT, process)
        yield gateway
    except BaseException:
        sys.stderr.write(f"--- gateway log ---\n{gateway.log}\n")
        raise
    finally:
        gateway.stop()
