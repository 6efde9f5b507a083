"""`packaged-ca`: a local root CA, generated once, that issues leaf certificates on demand.

The root (`state_dir/tls/packaged-ca/root.pem`, key `root-key.pem` mode 0600)
is shared by every packaged-ca listener of the gateway and valid ten years; it
may sign leaves only (path length 0). `flm-gateway ca install` puts it into the
OS trust store (see `trust_store`), `ca export` copies it for other devices.

Per handshake, a leaf is issued for the client's SNI when the SNI is one of the
listener's names (hostnames, *.name entries, localhost, its IPs); it is cached
in memory (at most `CACHE_SIZE`) and reissued when a third of its 90 days is
left. A handshake without SNI, or with a name the listener does not serve, gets
the listener's default leaf covering all its names, so the client sees a name
mismatch rather than a certificate for a name we were never configured for
(fail closed). Leaf keys are never written to disk.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections import OrderedDict
from pathlib import Path

from cryptography import x509

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.tls.mode import CertificateStatus, ServedCertificate, tls_root
from flm_gateway.tls.names import default_names
from flm_gateway.tls.pki import (
    PrivateKey,
    certs_to_pem,
    generate_key,
    issue_leaf,
    lifetime_left,
    load_certs_pem,
    make_root_ca,
    name_matches,
    read_private_key,
    write_file_atomic,
    write_private_key,
)

logger = logging.getLogger(__name__)

MODE = "packaged-ca"
ROOT_DAYS = 3650
LEAF_DAYS = 90
REISSUE_BELOW = 1 / 3
CACHE_SIZE = 256


def ca_dir(state_dir: Path) -> Path:
    return tls_root(state_dir) / "packaged-ca"


def root_cert_path(state_dir: Path) -> Path:
    return ca_dir(state_dir) / "root.pem"


def root_key_path(state_dir: Path) -> Path:
    return ca_dir(state_dir) / "root-key.pem"


class LocalRoot:
    """The gateway's root CA: its key and self-signed certificate."""

    def __init__(self, key: PrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def load(cls, state_dir: Path) -> LocalRoot | None:
        """The stored root, None when none was generated yet; reads only.

        Raises OSError or ValueError when what is stored cannot be used (fail closed).
        """
        cert_file, key_file = root_cert_path(state_dir), root_key_path(state_dir)
        if cert_file.exists() and key_file.exists():
            key = read_private_key(key_file)
            cert = load_certs_pem(cert_file.read_bytes())[0]
            if cert.public_key() != key.public_key():
                raise ValueError(f"{cert_file} does not belong to {key_file}")
            return cls(key, cert)
        if cert_file.exists() or key_file.exists():
            raise FileNotFoundError(
                f"{ca_dir(state_dir)} holds only half of the root CA (root.pem and root-key.pem "
                "belong together); restore the other file or remove both to make a new root"
            )
        return None

    @classmethod
    def load_or_create(cls, state_dir: Path) -> LocalRoot:
        stored = cls.load(state_dir)
        if stored is not None:
            return stored
        cert_file, key_file = root_cert_path(state_dir), root_key_path(state_dir)
        key = generate_key()
        name = f"flm-gateway local CA {socket.gethostname()[:24]} {secrets.token_hex(3)}"
        cert = make_root_ca(key, name, days=ROOT_DAYS)
        write_private_key(key_file, key)
        write_file_atomic(cert_file, certs_to_pem([cert]))
        logger.info("generated the packaged-ca root %r in %s", name, ca_dir(state_dir))
        return cls(key, cert)

    @staticmethod
    def existing_cert(state_dir: Path) -> x509.Certificate | None:
        """The root certificate if one was generated, without creating one."""
        path = root_cert_path(state_dir)
        return load_certs_pem(path.read_bytes())[0] if path.exists() else None


class PackagedCaSource:
    """Issues per-SNI leaves from the local root for one listener."""

    serves_tls = True

    def __init__(
        self, listener: ListenerConfig, state_dir: Path, root: LocalRoot | None = None
    ) -> None:
        self._name = listener.name
        self._root = root or LocalRoot.load_or_create(state_dir)
        self._names = default_names(listener)
        self._cache: OrderedDict[str, ServedCertificate] = OrderedDict()
        # tls_start_client runs on the event loop, `status()` may be called from a thread.
        self._lock = threading.Lock()
        self._default = self._issue(self._names)

    @property
    def root(self) -> LocalRoot:
        return self._root

    def serves(self, server_name: str) -> bool:
        return any(name_matches(pattern, server_name) for pattern in self._names)

    def certificate_for(self, server_name: str | None) -> ServedCertificate:
        if not server_name or not self.serves(server_name):
            with self._lock:
                if lifetime_left(self._default.leaf) < REISSUE_BELOW:
                    self._default = self._issue(self._names)
                return self._default
        name = server_name.lower().rstrip(".")
        with self._lock:
            served = self._cache.get(name)
            if served is None or lifetime_left(served.leaf) < REISSUE_BELOW:
                served = self._issue([name])
                self._cache[name] = served
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(name)
            return served

    def _issue(self, names: list[str]) -> ServedCertificate:
        key = generate_key()
        leaf = issue_leaf(self._root.key, self._root.cert, key, names, days=LEAF_DAYS)
        return ServedCertificate(key, (leaf,), "packaged-ca")

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> CertificateStatus:
        return CertificateStatus.of(
            self._name, MODE, self._default.leaf, note="leaves issued per name from the local root"
        )


def inspect(listener: ListenerConfig, state_dir: Path) -> CertificateStatus:
    """The root as stored (leaves live in memory only), without generating anything."""
    cert = LocalRoot.existing_cert(state_dir)
    if cert is None:
        return CertificateStatus(
            listener.name, MODE, note="root CA not generated yet (made at start or by ca install)"
        )
    return CertificateStatus.of(
        listener.name, MODE, cert, note="local root CA; leaves are issued from it per name"
    )
