"""local-http, packaged-ca and dev-selfsigned in the real gateway process, with real clients.

Fail-closed layer choice (TLS refused on a plain listener, plain HTTP answered
400 and closed on a TLS listener), per-SNI leaves verified with openssl against
the local root, minimum TLS version, HSTS, and a self-signed certificate that
survives a restart.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from tests.integration.tls_support import free_port, gateway, peer_certificate, s_client_verify

pytestmark = pytest.mark.timeout(60)


def config(plain: int, lan: int, dev: int) -> str:
    return f"""\
server: {{state_dir: ./state}}
listeners:
  - name: plain
    bind: 127.0.0.1:{plain}
  - name: lan
    bind: 127.0.0.1:{lan}
    tls: {{mode: packaged-ca, hostnames: [gw.lan, "*.apps.lan"], hsts: {{max_age: 1d}}}}
  - name: dev
    bind: 127.0.0.1:{dev}
    tls: {{mode: dev-selfsigned, hostnames: [dev.local], min_version: TLS1.3}}
"""


def tls_get(port: int, server_name: str, cafile: Path) -> http.client.HTTPResponse:
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection(server_name, port, timeout=5, context=context)
    conn.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), 5), server_hostname=server_name
    )
    conn.request("GET", "/v1/models")
    return conn.getresponse()


def test_modes_in_the_real_gateway(tmp_path: Path) -> None:
    plain, lan, dev = free_port(), free_port(), free_port()
    with gateway(config(plain, lan, dev), tmp_path, [plain, lan, dev]):
        root = tmp_path / "state/tls/packaged-ca/root.pem"

        # local-http: plain HTTP works, a TLS ClientHello is refused (no mitmproxy CA).
        conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=5)
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            peer_certificate(plain, "localhost")

        # packaged-ca: plain HTTP gets one 400 in OpenAI's shape, then the connection closes.
        conn = http.client.HTTPConnection("127.0.0.1", lan, timeout=5)
        conn.request("GET", "/v1/models")
        refused = conn.getresponse()
        assert refused.status == 400
        assert json.loads(refused.read())["error"]["code"] == "https_required"

        # A leaf per configured name, chained to the local root, with HSTS on responses.
        for name in ("gw.lan", "x.apps.lan"):
            result = s_client_verify(lan, name, root)
            assert result.returncode == 0, result.stdout + result.stderr
            leaf = peer_certificate(lan, name)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.DNSName) == [name]
        response = tls_get(lan, "gw.lan", root)
        assert response.status == 200
        assert response.getheader("strict-transport-security") == "max-age=86400"
        # An unknown SNI gets the default leaf, so the client sees a name mismatch.
        result = s_client_verify(lan, "evil.example", root)
        assert result.returncode != 0
        default = peer_certificate(lan, "evil.example")
        names = default.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "evil.example" not in names.get_values_for_type(x509.DNSName)

        # dev-selfsigned: TLS 1.3 minimum refuses a TLS 1.2 client.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", dev), 5) as sock:
            old.wrap_socket(sock, server_hostname="dev.local")
        cert_file = tmp_path / "state/tls/listeners/dev/cert.pem"
        response = tls_get(dev, "dev.local", cert_file)
        assert response.status == 200
        assert response.getheader("strict-transport-security") is None
        first = peer_certificate(dev, "dev.local")
        assert oct((tmp_path / "state/tls/listeners/dev/key.pem").stat().st_mode & 0o777) == "0o600"

    # The self-signed certificate (and the root) survive a restart unchanged.
    with gateway(config(plain, lan, dev), tmp_path / ".", [dev]):
        assert peer_certificate(dev, "dev.local").serial_number == first.serial_number
        assert s_client_verify(lan, "gw.lan", root).returncode == 0
