"""The one protocol every TLS mode implements, and the values modes hand out.

A `CertificateSource` is to a listener what an issuer is to a Caddy site: it
owns the listener's keys and certificates (under `state_dir/tls/<listener>/`)
and answers one question per TLS handshake, `certificate_for(server_name)`,
synchronously and from memory. Background work (ACME issuance and renewal)
runs between `start()` and `stop()`. A source never raises from
`certificate_for` for a listener that serves TLS unless it truly has nothing to
serve; the caller then fails the handshake (fail closed).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography import x509

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.tls.pki import PrivateKey, fingerprint, safe_dir_name, utcnow


@dataclass(frozen=True, eq=False)
class ServedCertificate:
    """A private key and its chain (leaf first), as served in one handshake."""

    key: PrivateKey
    chain: tuple[x509.Certificate, ...]
    origin: str
    """Where it came from, for logs and `check`: acme, self-signed, packaged-ca, temporary."""
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("a served certificate needs at least the leaf")
        object.__setattr__(self, "fingerprint", fingerprint(self.chain[0]))

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


@dataclass(frozen=True)
class CertificateStatus:
    """What `flm-gateway check` prints for one listener."""

    listener: str
    mode: str
    subject: str | None = None
    issuer: str | None = None
    not_after: datetime.datetime | None = None
    days_left: float | None = None
    note: str = ""

    @classmethod
    def of(
        cls, listener: str, mode: str, cert: x509.Certificate, note: str = ""
    ) -> CertificateStatus:
        not_after = cert.not_valid_after_utc
        return cls(
            listener=listener,
            mode=mode,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            not_after=not_after,
            days_left=round((not_after - utcnow()).total_seconds() / 86400, 1),
            note=note,
        )


class CertificateSource(Protocol):
    """One listener's TLS mode."""

    @property
    def serves_tls(self) -> bool:
        """False only for local-http: TLS ClientHellos are refused there."""
        ...

    def certificate_for(self, server_name: str | None) -> ServedCertificate:
        """The certificate for a handshake with this SNI (None: the client sent none)."""
        ...

    async def start(self) -> None:
        """Begin background work (called once the event loop runs)."""
        ...

    async def stop(self) -> None:
        """End background work; the source may still serve what it has."""
        ...

    def status(self) -> CertificateStatus:
        """The certificate served now, for `check` and metrics."""
        ...


def tls_root(state_dir: Path) -> Path:
    return state_dir / "tls"


def listener_dir(state_dir: Path, listener: ListenerConfig) -> Path:
    """`state_dir/tls/<listener>/`, where a listener's own key and certificate live."""
    return tls_root(state_dir) / "listeners" / safe_dir_name(listener.name)


class AcmeError(Exception):
    """An ACME order failed; the message says why, per name."""
