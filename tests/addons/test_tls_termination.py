"""TlsTermination with mitmproxy's taddons/tflow and hand-built contexts: no sockets.

Fail-closed layer choice, the certificate per listener and SNI, the refusing
context, HSTS, side-server planning and source reuse on reload. The real
handshakes and ACME run in tests/integration/test_tls_*.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from mitmproxy import connection, options, tls
from mitmproxy.proxy import context, events, layer
from mitmproxy.proxy.layers import ClientTLSLayer, HttpLayer, modes
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons, tflow
from OpenSSL import SSL

from flm_gateway.addons.tls_termination import TlsTermination
from flm_gateway.config import ConfigError
from flm_gateway.config.loader import LoadedConfig
from flm_gateway.proxy.tls_layers import RefuseLayer, could_be_tls, https_required_response
from tests.support.flows import configure
from tests.tls.helpers import load

CONFIG = """\
listeners:
  - name: plain
    bind: 127.0.0.1:18440
  - name: lan
    bind: 127.0.0.1:18444
    tls: {mode: packaged-ca, hostnames: [gw.lan], hsts: {max_age: 1d, include_subdomains: true}}
  - name: dev
    bind: 127.0.0.1:18445
    tls: {mode: dev-selfsigned, min_version: TLS1.3}
"""
SPEC = "reverse:http://127.0.0.1:9@127.0.0.1:{port}"
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    return load(CONFIG, tmp_path)


@pytest.fixture
def addon(loaded: LoadedConfig) -> Iterator[TlsTermination]:
    termination = TlsTermination()
    with taddons.context(termination):
        configure(loaded, termination)
        yield termination


def client(port: int, sni: str | None = None) -> connection.Client:
    conn = tflow.tclient_conn()
    conn.sockname = ("127.0.0.1", port)
    conn.proxy_mode = ProxyMode.parse(SPEC.format(port=port))
    conn.sni = sni
    conn.alpn = None
    return conn


def next_layer_for(addon: TlsTermination, port: int, data: bytes) -> layer.Layer | None:
    ctx = context.Context(client(port), _opts())
    modes.ReverseProxy(ctx)
    decision = layer.NextLayer(ctx)
    decision.events = [events.DataReceived(ctx.client, data)]
    addon.next_layer(decision)
    return decision.layer


def _opts() -> options.Options:
    return options.Options()


@pytest.mark.parametrize(
    ("port", "data", "expected"),
    [
        (18440, b"GET / HTTP/1.1\r\n", HttpLayer),
        (18440, CLIENT_HELLO_START, RefuseLayer),
        (18440, b"\x16", RefuseLayer),
        (18444, CLIENT_HELLO_START, ClientTLSLayer),
        (18444, b"\x16", ClientTLSLayer),
        (18444, b"GET / HTTP/1.1\r\n", RefuseLayer),
        (18445, b"\x00\x01", RefuseLayer),
    ],
)
def test_layer_choice_is_fixed_per_listener(
    addon: TlsTermination, port: int, data: bytes, expected: type
) -> None:
    assert isinstance(next_layer_for(addon, port, data), expected)


@pytest.mark.parametrize("data", [CLIENT_HELLO_START, b"GET / HTTP/1.1\r\n"])
def test_a_listener_without_committed_tls_settings_is_refused(
    addon: TlsTermination, data: bytes
) -> None:
    """Bound by a reload that has not committed yet: never mitmproxy's own choice, which
    would keep plain HTTP (or TLS with mitmproxy's CA) for the connection's lifetime."""
    assert isinstance(next_layer_for(addon, 9999, data), RefuseLayer)


def test_plain_http_on_a_tls_listener_gets_one_openai_shaped_400() -> None:
    response = https_required_response()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"code": "https_required"' in response and b"connection: close" in response
    assert could_be_tls(b"\x16\x03") and not could_be_tls(b"\x16\x04") and not could_be_tls(b"G")


def start_tls(addon: TlsTermination, port: int, sni: str | None) -> tls.TlsData:
    conn = client(port, sni)
    data = tls.TlsData(conn, context.Context(conn, _opts()))
    addon.tls_start_client(data)
    return data


def served_cert(data: tls.TlsData) -> x509.Certificate:
    assert isinstance(data.ssl_conn, SSL.Connection)
    cert = data.ssl_conn.get_certificate(as_cryptography=True)
    assert cert is not None
    return cert


def test_each_listener_serves_its_own_certificate(
    addon: TlsTermination, loaded: LoadedConfig
) -> None:
    lan = served_cert(start_tls(addon, 18444, "gw.lan"))
    assert lan.subject.rfc4514_string() == "CN=gw.lan"
    assert "flm-gateway local CA" in lan.issuer.rfc4514_string()
    dev = served_cert(start_tls(addon, 18445, None))
    assert dev.issuer == dev.subject  # self-signed
    assert served_cert(start_tls(addon, 18445, "x")) == dev
    assert start_tls(addon, 9999, "gw.lan").ssl_conn is None  # not ours


def test_a_listener_with_nothing_to_serve_fails_the_handshake(addon: TlsTermination) -> None:
    data = start_tls(addon, 18440, "gw.lan")  # local-http: its source has no certificate
    assert isinstance(data.ssl_conn, SSL.Connection)
    assert data.ssl_conn.get_certificate() is None


def test_hsts_only_on_tls_connections_of_listeners_that_ask(addon: TlsTermination) -> None:
    flow = tflow.tflow(resp=True)
    flow.client_conn = client(18444, "gw.lan")
    flow.client_conn.tls = True
    flow.client_conn.timestamp_tls_setup = 1.0
    addon.response(flow)
    assert flow.response is not None
    assert flow.response.headers["strict-transport-security"] == "max-age=86400; includeSubDomains"
    other = tflow.tflow(resp=True)
    other.client_conn = client(18445, None)
    other.client_conn.tls = True
    addon.responseheaders(other)
    assert other.response is not None and "strict-transport-security" not in other.response.headers


def test_reload_keeps_unchanged_sources_and_plans_side_servers(tmp_path: Path) -> None:
    text = (
        CONFIG
        + """\
  - name: acme
    bind: 127.0.0.1:18443
    tls:
      mode: https-acme
      domains: [gw.test]
      acme: {directory: "https://127.0.0.1:14000/dir", http_port: 18080}
      redirect_http: {}
"""
    )
    termination = TlsTermination()
    with taddons.context(termination):
        configure(load(text, tmp_path), termination)
        lan, acme = termination.source("lan"), termination.source("acme")
        [server] = termination._state.side_servers.values()
        assert server.address == ("127.0.0.1", 18080)
        assert server.redirect is not None and server.redirect.https_port == 18443
        # HSTS is not the source's business: the source (and its leaf cache) is kept.
        changed = text.replace("hsts: {max_age: 1d, include_subdomains: true}", "hsts: {}")
        configure(load(changed, tmp_path), termination)
        assert termination.source("acme") is acme and termination.source("lan") is lan
        # New names: a new source.
        renamed = changed.replace("hostnames: [gw.lan]", "hostnames: [gw2.lan]")
        configure(load(renamed, tmp_path), termination)
        assert termination.source("acme") is acme
        assert termination.source("lan") is not lan
        assert [s.listener for s in termination.certificate_status()] == [
            "plain",
            "lan",
            "dev",
            "acme",
        ]
        assert set(termination.certificate_expiry()) == {"lan", "dev", "acme"}


REFUSED = """\
listeners:
  - name: acme
    bind: 127.0.0.1:18555
    tls:
      mode: https-acme
      domains: [gw.test]
      acme: {directory: "https://127.0.0.1:1/dir", ca_bundle: bundle.pem, http_port: 18556}
  - name: dev
    bind: 127.0.0.1:18557
    tls: {mode: dev-selfsigned}
"""


def test_prepare_reads_the_stored_key_and_the_ca_bundle_and_names_both_with_positions(
    tmp_path: Path,
) -> None:
    """What would stop the start is found by reading only, for every listener in one pass,
    each at its own line and path; nothing is generated and nothing is committed."""
    (tmp_path / "bundle.pem").write_text("not a certificate\n")
    stored = tmp_path / "state" / "tls" / "listeners" / "dev"
    stored.mkdir(parents=True)
    (stored / "cert.pem").write_text("junk\n")
    (stored / "key.pem").write_text("junk\n")
    (stored / "key.pem").chmod(0o600)
    termination = TlsTermination()
    with pytest.raises(ConfigError) as refused:
        configure(load(REFUSED, tmp_path), termination)
    rendered = [str(problem) for problem in refused.value.problems]
    config = tmp_path / "flm.yaml"
    assert rendered == [
        f"{config}:8:63: listeners[0].tls.acme.ca_bundle: {tmp_path / 'bundle.pem'} holds no "
        "PEM certificate",
        f"{config}:11:17: listeners[1].tls.mode: dev-selfsigned: the stored key or certificate "
        f"cannot be used: {stored / 'key.pem'}: not a PEM private key",
    ]
    assert termination.certificate_status() == []  # nothing committed
    assert (stored / "key.pem").read_text() == "junk\n"  # nothing regenerated


def test_prepare_refuses_a_stored_key_others_can_read(tmp_path: Path) -> None:
    first = TlsTermination()
    configure(load(CONFIG, tmp_path), first)  # generates the dev listener's key
    key = tmp_path / "state" / "tls" / "listeners" / "dev" / "key.pem"
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"listeners\[2\]\.tls\.mode: .* readable by other"):
        configure(load(CONFIG, tmp_path), TlsTermination())
    configure(load(CONFIG, tmp_path), first)  # a source in use is not re-read on reload


def test_a_missing_ca_bundle_is_refused_at_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"flm.yaml:8:63: listeners\[0\]\.tls\.acme\.ca_bundle"):
        configure(load(REFUSED.split("  - name: dev")[0], tmp_path), TlsTermination())
