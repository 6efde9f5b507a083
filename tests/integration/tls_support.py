"""Real peers for the TLS integration tests: pebble + pebble-challtestsrv, the gateway process.

Pebble ships no certificate for its own HTTPS listener, so `Pebble.start` makes
one with openssl. challtestsrv answers every A query with 127.0.0.1 and serves
TXT records set through its management API; pebble resolves through it.
Every process started here is stopped by the fixture that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from tests.support.gateway_process import free_port

REPO = Path(__file__).resolve().parents[2]
CERT_VALIDITY = 30
"""Pebble's certificate lifetime in seconds: short, so renewal can be observed in a test."""


def wait_port(
    port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout}s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@dataclass
class Pebble:
    """A running pebble and challtestsrv."""

    workdir: Path
    acme_port: int
    management_port: int
    http_port: int
    challtest_port: int
    dns_port: int
    listener_ca: Path
    processes: list[subprocess.Popen[bytes]]

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def root_pem(self) -> bytes:
        """Pebble's issuing root (regenerated at every pebble start)."""
        context = ssl.create_default_context(cafile=str(self.listener_ca))
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            data: bytes = response.read()
        return data

    @classmethod
    def start(
        cls,
        workdir: Path,
        dns_server: str | None = None,
        ports: tuple[int, int, int, int] | None = None,
        eab_keys: dict[str, str] | None = None,
    ) -> Pebble:
        """Pebble resolving through challtestsrv, or through `dns_server` (host:port) if given.

        `ports`: (ACME, management, httpPort, tlsPort); default: free ones. `eab_keys`
        (key id -> base64url HMAC key): new accounts must carry an external account binding.
        """
        if not shutil.which("pebble") or not shutil.which("pebble-challtestsrv"):
            raise RuntimeError("pebble is not installed (apt-get install pebble)")
        workdir.mkdir(parents=True, exist_ok=True)
        openssl(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=pebble-listener-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            cwd=workdir,
        )
        openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "csr.pem",
            cwd=workdir,
        )
        (workdir / "ext.cnf").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        openssl(
            "x509",
            "-req",
            "-in",
            "csr.pem",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-out",
            "cert.pem",
            "-extfile",
            "ext.cnf",
            cwd=workdir,
        )
        acme_port, management_port, http_port, tls_port = ports or tuple(
            free_port() for _ in range(4)
        )
        challtest_port, dns_port = free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{acme_port}",
                "managementListenAddress": f"127.0.0.1:{management_port}",
                "certificate": str(workdir / "cert.pem"),
                "privateKey": str(workdir / "key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": bool(eab_keys),
                "externalAccountMACKeys": eab_keys or {},
                "certificateValidityPeriod": CERT_VALIDITY,
            }
        }
        (workdir / "pebble.json").write_text(json.dumps(config))
        processes: list[subprocess.Popen[bytes]] = []
        log = (workdir / "challtestsrv.log").open("wb")
        if dns_server is None:
            processes.append(
                subprocess.Popen(
                    [
                        "pebble-challtestsrv",
                        "-dns01",
                        f"127.0.0.1:{dns_port}",
                        "-http01",
                        "",
                        "-https01",
                        "",
                        "-tlsalpn01",
                        "",
                        "-management",
                        f"127.0.0.1:{challtest_port}",
                        "-defaultIPv4",
                        "127.0.0.1",
                        "-defaultIPv6",
                        "",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        env = dict(
            os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0"
        )
        log = (workdir / "pebble.log").open("wb")
        processes.append(
            subprocess.Popen(
                [
                    "pebble",
                    "-config",
                    str(workdir / "pebble.json"),
                    "-dnsserver",
                    dns_server or f"127.0.0.1:{dns_port}",
                    "-strict=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        pebble = cls(
            workdir,
            acme_port,
            management_port,
            http_port,
            challtest_port,
            dns_port,
            workdir / "ca.pem",
            processes,
        )
        try:
            if dns_server is None:
                wait_port(challtest_port, process=processes[0])
            wait_port(acme_port, process=processes[-1])
        except BaseException:
            pebble.stop()
            raise
        return pebble

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)


class GatewayProcess:
    """`python -m flm_gateway run --config FILE`, with its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log_path = log
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flm_gateway", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.parent,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited ({self.process.returncode}):\n{log}")
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not in the gateway log after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


@contextlib.contextmanager
def gateway(config_text: str, workdir: Path, ports: list[int]) -> Iterator[GatewayProcess]:
    """A gateway serving `config_text`, started and waited for until `ports` accept."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "flm.yaml"
    config.write_text(config_text)
    process = GatewayProcess(config, workdir / "gateway.log")
    try:
        for port in ports:
            wait_port(port, timeout=15, process=process.process)
        yield process
    finally:
        process.stop()


def peer_certificate(port: int, server_name: str | None = None) -> x509.Certificate:
    """The leaf a TLS listener serves for `server_name` (no verification)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), 5) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_for_issuer(
    port: int, server_name: str, not_issuer: str, timeout: float = 30.0
) -> x509.Certificate:
    """Poll until the served leaf is no longer issued by `not_issuer` (e.g. the temporary one)."""
    deadline = time.monotonic() + timeout
    while True:
        cert = peer_certificate(port, server_name)
        if not_issuer not in cert.issuer.rfc4514_string():
            return cert
        if time.monotonic() > deadline:
            raise TimeoutError(f"still serving {cert.issuer.rfc4514_string()} after {timeout}s")
        time.sleep(0.1)


def s_client_verify(port: int, server_name: str, cafile: Path) -> subprocess.CompletedProcess[str]:
    """openssl s_client with strict chain and hostname verification against `cafile`."""
    return subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            server_name,
            "-CAfile",
            str(cafile),
            "-verify_return_error",
            "-verify_hostname",
            server_name,
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
