"""Server contexts, exercised with in-memory handshakes (pyOpenSSL memory BIOs, no sockets)."""

from __future__ import annotations

import contextlib

import pytest
from OpenSSL import SSL

from flm_gateway.config.tls_settings import TlsVersion
from flm_gateway.tls.context import ContextCache, refusing_context, server_context
from flm_gateway.tls.mode import ServedCertificate
from flm_gateway.tls.pki import generate_key, issue_leaf, make_root_ca


def handshake(server_ctx: SSL.Context, max_version: int | None = None) -> SSL.Connection:
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_version is not None:
        client_ctx.set_max_proto_version(max_version)
    server, client = SSL.Connection(server_ctx, None), SSL.Connection(client_ctx, None)
    server.set_accept_state()
    client.set_connect_state()
    client.set_tlsext_host_name(b"gw.lan")
    for _ in range(10):
        for this, other in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                this.do_handshake()
            try:
                data = this.bio_read(65536)
            except SSL.WantReadError:
                continue
            other.bio_write(data)
        if client.get_peer_certificate() is not None and server.get_protocol_version_name():
            try:
                client.do_handshake()
                return client
            except SSL.WantReadError:
                continue
    return client


def served_chain() -> ServedCertificate:
    ca_key, leaf_key = generate_key(), generate_key()
    root = make_root_ca(ca_key, "test root", days=10)
    leaf = issue_leaf(ca_key, root, leaf_key, ["gw.lan"], days=5)
    return ServedCertificate(leaf_key, (leaf, root), "test")


def test_serves_the_whole_chain_with_tls13() -> None:
    served = served_chain()
    client = handshake(server_context(served, TlsVersion.TLS1_2))
    chain = client.get_peer_cert_chain(as_cryptography=True)
    assert chain is not None and [c.subject for c in chain] == [c.subject for c in served.chain]
    assert client.get_protocol_version_name() == "TLSv1.3"


def test_minimum_version_refuses_older_clients() -> None:
    ctx = server_context(served_chain(), TlsVersion.TLS1_3)
    with pytest.raises(SSL.Error):
        handshake(ctx, max_version=SSL.TLS1_2_VERSION)


def test_refusing_context_fails_every_handshake() -> None:
    with pytest.raises(SSL.Error):
        handshake(refusing_context())


def test_cache_reuses_per_certificate_and_version() -> None:
    cache = ContextCache(size=2)
    a, b = served_chain(), served_chain()
    assert cache.get(a, TlsVersion.TLS1_2) is cache.get(a, TlsVersion.TLS1_2)
    assert cache.get(a, TlsVersion.TLS1_3) is not cache.get(a, TlsVersion.TLS1_2)
    first = cache.get(b, TlsVersion.TLS1_2)
    cache.get(a, TlsVersion.TLS1_3)
    cache.get(a, TlsVersion.TLS1_2)
    assert cache.get(b, TlsVersion.TLS1_2) is not first  # evicted, rebuilt
