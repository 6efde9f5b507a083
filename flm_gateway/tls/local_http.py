"""`local-http`: plain HTTP, no certificate.

The listener serves no TLS at all; `addons.tls_termination` refuses a TLS
ClientHello on it (closes the connection) instead of letting mitmproxy
terminate TLS with its own generated CA.
"""

from __future__ import annotations

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.tls.mode import CertificateStatus, ServedCertificate


class LocalHttpSource:
    """The source of a plain-HTTP listener: it has nothing to serve."""

    serves_tls = False

    def __init__(self, listener: ListenerConfig) -> None:
        self._name = listener.name

    def certificate_for(self, server_name: str | None) -> ServedCertificate:
        raise LookupError(f"listener {self._name!r} is plain HTTP (local-http) and serves no TLS")

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> CertificateStatus:
        return CertificateStatus(self._name, "local-http", note="plain HTTP, no certificate")
