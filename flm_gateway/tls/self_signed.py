"""`dev-selfsigned`: one self-signed certificate, generated once and kept.

The key and certificate live in `state_dir/tls/listeners/<listener>/`
(`key.pem` mode 0600, `cert.pem`). They are regenerated when the names the
certificate must cover change (hostnames, localhost, the listener's IPs) or
when less than a third of its one-year lifetime is left; otherwise the same
certificate is served across restarts, so a client can pin or trust it once.
Clients do not trust it by default: this mode is for development.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.tls.mode import CertificateStatus, ServedCertificate, listener_dir
from flm_gateway.tls.names import default_names
from flm_gateway.tls.pki import (
    cert_names,
    certs_to_pem,
    generate_key,
    lifetime_left,
    load_certs_pem,
    make_self_signed,
    read_private_key,
    write_file_atomic,
    write_private_key,
)

logger = logging.getLogger(__name__)

VALIDITY_DAYS = 365
REGENERATE_BELOW = 1 / 3
MODE = "dev-selfsigned"


def cert_path(directory: Path) -> Path:
    return directory / "cert.pem"


def key_path(directory: Path) -> Path:
    return directory / "key.pem"


def _usable(cert: x509.Certificate, names: list[str]) -> bool:
    return sorted(cert_names(cert)) == sorted(names) and lifetime_left(cert) > REGENERATE_BELOW


def load_or_create(directory: Path, names: list[str], label: str) -> ServedCertificate:
    """The stored certificate if it still fits `names`, else a new one (written to disk)."""
    cert_file, key_file = cert_path(directory), key_path(directory)
    if cert_file.exists() and key_file.exists():
        key = read_private_key(key_file)  # PermissionError on a world-readable key: fail closed
        try:
            cert = load_certs_pem(cert_file.read_bytes())[0]
        except ValueError:
            cert = None
        if cert is not None and _usable(cert, names) and cert.public_key() == key.public_key():
            return ServedCertificate(key, (cert,), "self-signed")
        logger.info("%s: self-signed certificate no longer fits its names; regenerating", label)
    key = generate_key()
    cert = make_self_signed(key, names, days=VALIDITY_DAYS)
    write_private_key(key_file, key)
    write_file_atomic(cert_file, certs_to_pem([cert]))
    logger.info(
        "%s: generated a self-signed certificate for %s in %s", label, ", ".join(names), directory
    )
    return ServedCertificate(key, (cert,), "self-signed")


def check(listener: ListenerConfig, state_dir: Path) -> None:
    """Raise what `load_or_create` would raise on the stored key, reading only (a key that
    is unreadable, not a key, or readable by others); a missing or stale pair is fine."""
    directory = listener_dir(state_dir, listener)
    if cert_path(directory).exists() and key_path(directory).exists():
        read_private_key(key_path(directory))


class SelfSignedSource:
    """Serves one self-signed certificate for every SNI."""

    serves_tls = True

    def __init__(self, listener: ListenerConfig, state_dir: Path) -> None:
        self._name = listener.name
        self._served = load_or_create(
            listener_dir(state_dir, listener), default_names(listener), f"listener {listener.name}"
        )

    def certificate_for(self, server_name: str | None) -> ServedCertificate:
        return self._served

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> CertificateStatus:
        return CertificateStatus.of(self._name, MODE, self._served.leaf)


def inspect(listener: ListenerConfig, state_dir: Path) -> CertificateStatus:
    """What is on disk, without generating anything (for `check`)."""
    path = cert_path(listener_dir(state_dir, listener))
    if not path.exists():
        return CertificateStatus(listener.name, MODE, note="not generated yet (made at start)")
    cert = load_certs_pem(path.read_bytes())[0]
    note = "" if _usable(cert, default_names(listener)) else "will be regenerated at next start"
    return CertificateStatus.of(listener.name, MODE, cert, note)
