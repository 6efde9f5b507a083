"""https-acme against a real ACME server (pebble) and the real gateway process.

HTTP-01 answered by the gateway, DNS-01 through a hook calling challtestsrv's
/set-txt, a wildcard, renewal hot swap (new serial on a new connection while an
old connection keeps working), a failed validation with a clear error; chains
verified with `openssl s_client -verify_return_error`.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography import x509

from tests.integration.tls_support import (
    Pebble,
    free_port,
    gateway,
    peer_certificate,
    s_client_verify,
    wait_for_issuer,
)

pytestmark = pytest.mark.timeout(60)

TEMPORARY = "CN=temporary"


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = Pebble.start(tmp_path_factory.mktemp("pebble"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pebble_root(pebble: Pebble, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pebble-root") / "root.pem"
    path.write_bytes(pebble.root_pem())
    return path


def acme_config(pebble: Pebble, port: int, tls_block: str) -> str:
    return f"""\
server: {{state_dir: ./state, log_level: info}}
listeners:
  - name: acme
    bind: 127.0.0.1:{port}
    tls:
{tls_block}
"""


def http01_block(
    pebble: Pebble, domains: str, extra: str = "", http_port: int | None = None
) -> str:
    return f"""\
      mode: https-acme
      domains: {domains}
      acme:
        directory: {pebble.directory}
        ca_bundle: {pebble.listener_ca}
        email: ops@gw.test
        challenge: http-01
        http_port: {http_port or pebble.http_port}
{extra}"""


def test_http01_issues_a_verifiable_certificate_and_redirects(
    pebble: Pebble, pebble_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    block = http01_block(pebble, "[gw.test]")
    block += "      hsts: {max_age: 1d}\n      redirect_http: {}\n"
    with gateway(acme_config(pebble, port, block), tmp_path, [port]) as gw:
        assert "serving a temporary self-signed certificate" in gw.wait_log("listening on")
        cert = wait_for_issuer(port, "gw.test", TEMPORARY)
        assert "Pebble" in cert.issuer.rfc4514_string()
        result = s_client_verify(port, "gw.test", pebble_root)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Verify return code: 0 (ok)" in result.stdout
        gw.wait_log("obtained certificate serial")
        # The HTTP-01 port also redirects everything else to the HTTPS listener.
        conn = http.client.HTTPConnection("127.0.0.1", pebble.http_port, timeout=5)
        conn.request("GET", "/v1/models?x=1", headers={"Host": f"gw.test:{pebble.http_port}"})
        response = conn.getresponse()
        assert response.status == 308
        assert response.getheader("Location") == f"https://gw.test:{port}/v1/models?x=1"
        conn.close()
        # Over TLS, with the CA's chain trusted, the API answers with HSTS.
        context = ssl.create_default_context(cafile=str(pebble_root))
        https = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
        https.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), 5), server_hostname="gw.test"
        )
        https.request("GET", "/v1/models", headers={"Host": "gw.test"})
        api = https.getresponse()
        assert api.status == 200
        assert api.getheader("strict-transport-security") == "max-age=86400"
        https.close()
    state = tmp_path / "state" / "tls"
    assert oct((state / "listeners" / "acme" / "key.pem").stat().st_mode & 0o777) == "0o600"
    accounts = list((state / "acme" / "accounts").glob("*/account-key.pem"))
    assert len(accounts) == 1 and oct(accounts[0].stat().st_mode & 0o777) == "0o600"


def test_dns01_hook_and_wildcard(pebble: Pebble, pebble_root: Path, tmp_path: Path) -> None:
    hook = tmp_path / "dns-hook.sh"
    hook.write_text(
        "#!/bin/sh\n"
        "set -e\n"
        f"api=http://127.0.0.1:{pebble.challtest_port}\n"
        'case "$1" in\n'
        "  present) curl -sf -X POST $api/set-txt"
        ' -d "{\\"host\\":\\"$2\\",\\"value\\":\\"$3\\"}" ;;\n'
        '  cleanup) curl -sf -X POST -d "{\\"host\\":\\"$2\\"}" $api/clear-txt ;;\n'
        "esac\n"
    )
    hook.chmod(0o755)
    port = free_port()
    block = f"""\
      mode: https-acme
      domains: [gw.test, "*.gw.test"]
      acme:
        directory: {pebble.directory}
        ca_bundle: {pebble.listener_ca}
        challenge: dns-01
        dns: {{command: [{hook}], propagation_delay: 0s}}
"""
    with gateway(acme_config(pebble, port, block), tmp_path, [port]) as gw:
        cert = wait_for_issuer(port, "api.gw.test", TEMPORARY)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(san.get_values_for_type(x509.DNSName)) == ["*.gw.test", "gw.test"]
        for name in ("gw.test", "api.gw.test"):
            result = s_client_verify(port, name, pebble_root)
            assert result.returncode == 0, result.stdout + result.stderr
        gw.wait_log("obtained certificate serial")


def _keepalive_get(tls: ssl.SSLSocket) -> bytes:
    tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += tls.recv(65536)
    return head.split(b"\r\n", 1)[0]


def test_renewal_hot_swaps_without_dropping_open_connections(
    pebble: Pebble, pebble_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    # Pebble issues 30 s certificates; renewing with 80 % left means about 6 s after issuance.
    block = http01_block(pebble, "[gw.test]", extra="        renew_before: 0.8\n")
    with gateway(acme_config(pebble, port, block), tmp_path, [port]) as gw:
        first = wait_for_issuer(port, "gw.test", TEMPORARY)
        context = ssl.create_default_context(cafile=str(pebble_root))
        with (
            socket.create_connection(("127.0.0.1", port), 5) as raw,
            context.wrap_socket(raw, server_hostname="gw.test") as old,
        ):
            assert _keepalive_get(old) == b"HTTP/1.1 200 OK"
            old_der = old.getpeercert(binary_form=True)
            assert old_der is not None
            assert x509.load_der_x509_certificate(old_der).serial_number == first.serial_number
            deadline = time.monotonic() + 25
            renewed = first
            while renewed.serial_number == first.serial_number:
                assert time.monotonic() < deadline, "no renewal within 25 s:\n" + gw.log()
                time.sleep(0.2)
                renewed = peer_certificate(port, "gw.test")
            assert "renewed certificate serial" in gw.log()
            assert gw.log().count("created an ACME account key") == 1  # the account is kept
            # The old connection still works, with the certificate it started with.
            assert _keepalive_get(old) == b"HTTP/1.1 200 OK"
        result = s_client_verify(port, "gw.test", pebble_root)
        assert result.returncode == 0, result.stdout + result.stderr


def test_failed_validation_is_reported_clearly(pebble: Pebble, tmp_path: Path) -> None:
    port = free_port()
    # Our responder listens where pebble does not look, so pebble's dial is refused.
    block = http01_block(pebble, "[fail.test]", http_port=free_port())
    with gateway(acme_config(pebble, port, block), tmp_path, [port]) as gw:
        log = gw.wait_log("ACME order for fail.test failed")
        line = next(line for line in log.splitlines() if "ACME order for fail.test failed" in line)
        assert "fail.test (http-01): urn:ietf:params:acme:error:connection" in line
        assert "retrying in 60s" in line
        # Still up, still serving the temporary certificate.
        assert TEMPORARY in peer_certificate(port, "fail.test").issuer.rfc4514_string()


class _Relay(http.server.BaseHTTPRequestHandler):
    """A DNS webhook in lego's httpreq format that publishes through challtestsrv."""

    challtest = ""
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Relay.seen.append((self.path, self.headers.get("authorization")))
        if self.path == "/acme/present":
            payload = {"host": body["fqdn"], "value": body["value"]}
            target = "set-txt"
        else:
            payload, target = {"host": body["fqdn"]}, "clear-txt"
        request = urllib.request.Request(
            f"{self.challtest}/{target}", data=json.dumps(payload).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            status = response.status
        self.send_response(200 if status == 200 else 502)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def test_dns01_webhook(pebble: Pebble, pebble_root: Path, tmp_path: Path) -> None:
    _Relay.challtest = f"http://127.0.0.1:{pebble.challtest_port}"
    _Relay.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Relay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = free_port()
        block = f"""\
      mode: https-acme
      domains: [hook.test]
      acme:
        directory: {pebble.directory}
        ca_bundle: {pebble.listener_ca}
        challenge: dns-01
        dns:
          webhook:
            url: http://127.0.0.1:{server.server_port}/acme
            headers: {{Authorization: "Bearer s3cret-token"}}
          propagation_delay: 0s
"""
        with gateway(acme_config(pebble, port, block), tmp_path, [port]) as gw:
            wait_for_issuer(port, "hook.test", TEMPORARY)
            result = s_client_verify(port, "hook.test", pebble_root)
            assert result.returncode == 0, result.stdout + result.stderr
            log = gw.wait_log("obtained certificate serial")
            assert "s3cret-token" not in log
        assert [path for path, _ in _Relay.seen] == ["/acme/present", "/acme/cleanup"]
        assert {auth for _, auth in _Relay.seen} == {"Bearer s3cret-token"}
    finally:
        server.shutdown()
        server.server_close()
