"""pyOpenSSL server contexts for client handshakes, built from a `ServedCertificate`.

Policy: TLS 1.2 or 1.3 minimum per listener, Mozilla's "intermediate" cipher
list for TLS 1.2, no compression, no renegotiation, ALPN chosen by mitmproxy's
own callback (so HTTP/2 works as with mitmproxy's TlsConfig). One context per
(certificate, minimum version) is cached; a renewed certificate gets a new
context while connections already open keep the one they were made with.
A context with no certificate (`refusing_context`) fails every handshake; it is
what a listener gets when it has nothing to serve.
"""

from __future__ import annotations

from collections import OrderedDict

from mitmproxy.addons.tlsconfig import alpn_select_callback
from OpenSSL import SSL

from flm_gateway.config.tls_settings import TlsVersion
from flm_gateway.tls.mode import ServedCertificate

INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
_VERSIONS = {TlsVersion.TLS1_2: SSL.TLS1_2_VERSION, TlsVersion.TLS1_3: SSL.TLS1_3_VERSION}
_OPTIONS = SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION


def _base_context(min_version: TlsVersion) -> SSL.Context:
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(_VERSIONS[min_version])
    context.set_options(_OPTIONS)
    context.set_cipher_list(INTERMEDIATE_CIPHERS.encode())
    context.set_verify(SSL.VERIFY_NONE, None)
    context.set_alpn_select_callback(alpn_select_callback)
    return context


def server_context(served: ServedCertificate, min_version: TlsVersion) -> SSL.Context:
    """A context presenting `served` (leaf, then the rest of its chain)."""
    context = _base_context(min_version)
    context.use_certificate(served.leaf)
    context.use_privatekey(served.key)
    for cert in served.chain[1:]:
        context.add_extra_chain_cert(cert)
    context.check_privatekey()
    return context


def refusing_context() -> SSL.Context:
    """A context without a certificate: every handshake fails (no shared cipher)."""
    return _base_context(TlsVersion.TLS1_2)


class ContextCache:
    """Least-recently-used contexts keyed by (certificate fingerprint, minimum version)."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._contexts: OrderedDict[tuple[str, TlsVersion], SSL.Context] = OrderedDict()

    def get(self, served: ServedCertificate, min_version: TlsVersion) -> SSL.Context:
        key = (served.fingerprint, min_version)
        context = self._contexts.get(key)
        if context is None:
            context = server_context(served, min_version)
            self._contexts[key] = context
            while len(self._contexts) > self._size:
                self._contexts.popitem(last=False)
        self._contexts.move_to_end(key)
        return context
