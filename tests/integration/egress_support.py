"""Real peers for the egress tests: a counting target engine, microsocks, dante, tor, a test CA.

Every process is started by a context manager that stops it (SIGTERM, then SIGKILL) on
exit; every server listens on 127.0.0.1 (or inside the test's own network namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.gateway_process import ROOT, free_port

SSE_EVENTS = 5
SSE_GAP = 0.25


@dataclass
class Target:
    """An OpenAI-compatible engine that counts TCP connections and records peers and SNI."""

    ssl_context: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    connections: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(peer IP, path) of every HTTP request."""
    sni: list[str | None] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def peers(self) -> set[str]:
        return {peer for peer, _ in self.requests}

    async def start(self) -> Target:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        server = self._runner.server
        assert server is not None

        def factory() -> Any:
            self.connections += 1
            return server()

        if self.ssl_context is not None:
            self.ssl_context.sni_callback = self._record_sni
        self._server = await asyncio.get_running_loop().create_server(
            factory, "127.0.0.1", self.port or 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _record_sni(self, sock: Any, name: str | None, context: Any) -> None:
        self.sni.append(name)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _record(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append((peer[0] if peer else "?", request.path))

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(
            {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "target"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hi"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for index in range(SSE_EVENTS):
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": str(index)}, "finish_reason": None}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(SSE_GAP)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


@contextlib.contextmanager
def process(
    argv: list[str], port: int | None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run argv until the block ends; wait for `port` to accept first."""
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if port is not None:
            wait_port(port)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if log is not None and not isinstance(out, int):
            out.close()


def need(binary: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        import pytest

        pytest.skip(f"{binary} is not installed (scripts/test.sh installs it)")
    return path


@contextlib.contextmanager
def microsocks(
    port: int, *, user: str | None = None, password: str | None = None, bind: str = "127.0.0.2"
) -> Iterator[subprocess.Popen[bytes]]:
    """microsocks on 127.0.0.1:port; outgoing connections come from `bind` (proof of passage)."""
    argv = [need("microsocks"), "-i", "127.0.0.1", "-p", str(port), "-b", bind]
    if user is not None and password is not None:
        argv += ["-u", user, "-P", password]
    with process(argv, port) as proc:
        yield proc


DANTE_USER = "flmsocks"
DANTE_PASSWORD = "flm-socks-pass-1"


def ensure_dante_user() -> None:
    """The system account dante's username method checks (root only)."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("dante username auth needs a system account; creating one needs root")
    if subprocess.run(["id", DANTE_USER], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "-M", "-s", "/usr/sbin/nologin", DANTE_USER],
            check=True,
            capture_output=True,
        )
    subprocess.run(
        ["chpasswd"],
        input=f"{DANTE_USER}:{DANTE_PASSWORD}".encode(),
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def danted(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """dante on 127.0.0.1:port, username auth (system accounts), loopback targets only."""
    binary = need("danted")
    ensure_dante_user()
    conf = workdir / "danted.conf"
    conf.write_text(
        f"""logoutput: {workdir / "danted.log"}
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: username
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{
  from: 127.0.0.0/8 to: 127.0.0.0/8
  command: connect
  socksmethod: username
}}
socks block {{ from: 0.0.0.0/0 to: 0.0.0.0/0 log: connect error }}
"""
    )
    with process([binary, "-f", str(conf), "-p", str(workdir / "danted.pid")], port) as proc:
        yield proc


@contextlib.contextmanager
def tor(workdir: Path, socks_port: int, control_port: int) -> Iterator[subprocess.Popen[bytes]]:
    """An offline Tor client (it never bootstraps in a namespace without a network)."""
    data = workdir / "tor-data"
    data.mkdir(mode=0o700, exist_ok=True)
    argv = [
        need("tor"),
        "-f",
        "/dev/null",
        "--ignore-missing-torrc",
        "--SocksPort",
        f"127.0.0.1:{socks_port}",
        "--ControlPort",
        f"127.0.0.1:{control_port}",
        "--DataDirectory",
        str(data),
        "--Log",
        "notice stdout",
    ]
    with process(argv, socks_port, workdir / "tor.log") as proc:
        wait_port(control_port)
        yield proc


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(workdir: Path, hostnames: list[str]) -> tuple[Path, dict[str, tuple[Path, Path]]]:
    """A test CA (ca.pem) and, per hostname, a leaf certificate and key it signed."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("flm egress test CA"))
        .issuer_name(_name("flm egress test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = workdir / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaves: dict[str, tuple[Path, Path]] = {}
    for hostname in hostnames:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hostname))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = workdir / f"{hostname}.pem", workdir / f"{hostname}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        leaves[hostname] = (cert_path, key_path)
    return ca_pem, leaves


def trust_ca_env(workdir: Path, ca_pem: Path) -> dict[str, str]:
    """Environment for a gateway process that trusts `ca_pem` as if it were a public CA.

    mitmproxy verifies engines against certifi's bundle; a sitecustomize on PYTHONPATH
    points certifi at the test CA. aiohttp (health checks) honours SSL_CERT_FILE.
    """
    shim = workdir / "trust-shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        f"import certifi\ncertifi.where = lambda: {str(ca_pem)!r}\n"
    )
    return {"PYTHONPATH": f"{shim}{os.pathsep}{ROOT}", "SSL_CERT_FILE": str(ca_pem)}


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) and never answers a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


__all__ = ["Target", "blackhole", "danted", "free_port", "make_ca", "microsocks", "tor"]
