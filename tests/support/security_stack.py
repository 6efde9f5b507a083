"""A running gateway with the issue's reference security config, for integration tests.

`security_stack(tmp_path)` starts a fake vLLM engine process and the real gateway
process (`python -m flm_gateway run`), and yields a `SecurityStack` that can mint
keys through the CLI code (in-process, against the same state database the
gateway uses) and send requests from any 127.0.0.0/8 source address, so tests
that get an address blocked do not disturb each other.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from flm_gateway.cli import main as cli_main
from tests.support.fake_engines import start_fake_engine_process
from tests.support.gateway_process import GatewayProcess, run_gateway

REFERENCE_CONFIG = """\
server: {state_dir: "{state_dir}"}
state: {refresh_interval: 200ms}
listeners:
  - name: main
    bind: 127.0.0.1:{port}
    tls: {mode: local-http}
    auth: api-key              # api-key | none
engines:
  - {name: alpha, kind: vllm, url: "ENGINE_URL"}
security:
  rate_limits:
    per_key: {requests_per_minute: 10}
    per_ip: {requests_per_minute: 600}
  ip: {allow: ["127.0.0.0/8", "::1"], block: []}
  honeypots: ["/.env", "/wp-admin"]
  # Only 127.0.0.1 is spared (the default spares 127.0.0.0/8): the tests get other
  # 127.x addresses blocked.
  auto_block: {auth_failures: 5, window: 1m, duration: 10m, never_block: [127.0.0.1, "::1"]}
  cors: {allow_origins: ["https://app.example.com"]}
"""


@dataclass
class SecurityStack:
    gateway: GatewayProcess
    engine_url: str

    @property
    def port(self) -> int:
        return int(self.gateway.url.rsplit(":", 1)[1])

    def cli(self, *args: str) -> tuple[int, str]:
        """Run an `flm-gateway` command in-process against this gateway's config."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = cli_main([*args, "--config", str(self.gateway.config_path)])
        return code, out.getvalue()

    def new_key(self, name: str = "test", *extra: str) -> str:
        """A fresh key's secret (the gateway accepts it after `settle()`)."""
        code, out = self.cli("keys", "create", "--name", name, "--json", *extra)
        assert code == 0, out
        return str(json.loads(out)["key"])

    @staticmethod
    def settle() -> None:
        """Wait until the gateway has seen the store's latest changes (refresh: 200 ms)."""
        time.sleep(0.6)

    def status(
        self, path: str, *, key: str | None = None, source: str = "127.0.0.1", method: str = "GET"
    ) -> int:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        with self.client(source) as client:
            return client.request(method, self.gateway.url + path, headers=headers).status_code

    def client(self, source: str = "127.0.0.1", **kwargs: object) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(transport=transport, timeout=10, **kwargs)  # type: ignore[arg-type]

    def async_client(self, source: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=source)
        return httpx.AsyncClient(transport=transport, timeout=20)

    def raw(self, request: bytes, source: str = "127.0.0.1") -> bytes:
        """Send raw bytes from `source`; everything the gateway answers until it closes."""
        with socket.create_connection(
            ("127.0.0.1", self.port), timeout=10, source_address=(source, 0)
        ) as sock:
            sock.sendall(request)
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def wait_for(condition: object, timeout: float = 5.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise TimeoutError(f"{what} not reached within {timeout}s")


@contextlib.contextmanager
def security_stack(tmp_path: Path, config: str = REFERENCE_CONFIG) -> Iterator[SecurityStack]:
    with start_fake_engine_process("vllm", ["tiny-a"]) as (_, engine_url):
        text = config.replace("ENGINE_URL", engine_url)
        with run_gateway(text, tmp_path) as gateway:
            yield SecurityStack(gateway, engine_url)
