"""Keys, certificates and their files: the crypto every TLS mode shares.

Policy: private keys are ECDSA P-256 unless a mode asks otherwise, written
atomically with mode 0600 (the directory 0700) and never logged. Certificates
are PEM. Nothing here touches the network.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def generate_key(kind: str = "ec256") -> PrivateKey:
    """A new private key: ec256, ec384, rsa2048 or rsa4096."""
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind in ("rsa2048", "rsa4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise ValueError(f"unknown key type {kind!r}")


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key_pem(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("only EC and RSA keys are supported")
    return key


def certs_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def load_certs_pem(data: bytes) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(data)
    if not certs:
        raise ValueError("no certificate in the PEM data")
    return certs


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, lowercase hex."""
    return cert.fingerprint(hashes.SHA256()).hex()


def sha1_fingerprint(cert: x509.Certificate) -> str:
    """SHA-1 fingerprint, uppercase hex (the form macOS and Windows tools take)."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - an identifier only


def safe_dir_name(name: str) -> str:
    """A file-system-safe directory name for a listener name."""
    if _SAFE_NAME_RE.match(name) and name not in (".", ".."):
        return name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:40] or "listener"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_file_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically (rename), with `mode` from the first byte on."""
    ensure_private_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_private_key(path: Path, key: PrivateKey) -> None:
    write_file_atomic(path, key_to_pem(key), mode=0o600)


def read_private_key(path: Path) -> PrivateKey:
    """Load a key file; refuses one that others can read (fail closed)."""
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by other users; chmod 600 it")
    try:
        return load_key_pem(path.read_bytes())
    except ValueError as exc:
        reason = "not a PEM private key" if "PEM" in str(exc) else str(exc)
        raise ValueError(f"{path}: {reason}") from None


def san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    """DNS and IP SubjectAlternativeName entries, deduplicated in order."""
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def cert_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate's SAN extension covers."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def name_matches(pattern: str, name: str) -> bool:
    """True when certificate name `pattern` (maybe *.x) covers host `name` (RFC 6125 rules)."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def _subject(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def make_self_signed(
    key: PrivateKey,
    names: Sequence[str],
    *,
    days: float,
    common_name: str | None = None,
) -> x509.Certificate:
    """A self-signed server certificate (CA:false) for `names`."""
    now = utcnow()
    subject = _subject(common_name or (names[0] if names else "flm-gateway"), "flm-gateway")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(san_entries(names)), False)
    return builder.sign(_as_signer(key), hashes.SHA256())


def make_root_ca(key: PrivateKey, common_name: str, *, days: float) -> x509.Certificate:
    """A root CA certificate that may sign leaf certificates only (path length 0)."""
    now = utcnow()
    subject = _subject(common_name, "flm-gateway")
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(_as_signer(key), hashes.SHA256())
    )


def issue_leaf(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    leaf_key: PrivateKey,
    names: Sequence[str],
    *,
    days: float,
) -> x509.Certificate:
    """A server certificate for `names`, signed by the CA."""
    now = utcnow()
    public = leaf_key.public_key()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_subject(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(leaf_key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(_as_signer(ca_key), hashes.SHA256())
    )


def lifetime_left(cert: x509.Certificate, now: datetime.datetime | None = None) -> float:
    """Fraction of the validity period still ahead (<= 0 when expired)."""
    now = now or utcnow()
    total = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
    if total <= 0:
        return 0.0
    return (cert.not_valid_after_utc - now).total_seconds() / total


def renewal_due_at(cert: x509.Certificate, renew_before: float) -> datetime.datetime:
    """When `renew_before` of the lifetime is left."""
    total = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - total * renew_before


def _as_signer(key: PrivateKey) -> CertificateIssuerPrivateKeyTypes:
    return key
