"""Passphrase encryption of a backup payload: scrypt key derivation and AES-256-GCM.

See the package docstring for the layout. Opening refuses scrypt parameters
beyond `MAX_SCRYPT_N` so a crafted file cannot make restore allocate gigabytes.
"""

from __future__ import annotations

import base64
import json
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"FLMGW-BACKUP\x00"
FORMAT = 1
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
MAX_SCRYPT_N = 2**20


class BackupCryptoError(Exception):
    """The sealed backup cannot be opened (wrong passphrase, damage, or not ours)."""


def is_sealed(data: bytes) -> bool:
    return data.startswith(MAGIC)


def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seal(payload: bytes, passphrase: str) -> bytes:
    """The sealed form of `payload`."""
    salt, nonce = os.urandom(16), os.urandom(12)
    header = json.dumps(
        {
            "kdf": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": _b64(salt),
            "cipher": "AES-256-GCM",
            "nonce": _b64(nonce),
        },
        sort_keys=True,
    ).encode()
    prefix = MAGIC + bytes([FORMAT]) + struct.pack(">H", len(header)) + header
    key = _key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return prefix + AESGCM(key).encrypt(nonce, payload, prefix)


def unseal(data: bytes, passphrase: str) -> bytes:
    """The payload of a sealed backup. Raises BackupCryptoError."""
    if not is_sealed(data) or len(data) < len(MAGIC) + 3:
        raise BackupCryptoError("this is not an encrypted flm-gateway backup")
    offset = len(MAGIC)
    if data[offset] != FORMAT:
        raise BackupCryptoError(f"unknown encrypted backup format {data[offset]}")
    (length,) = struct.unpack(">H", data[offset + 1 : offset + 3])
    start = offset + 3
    try:
        header = json.loads(data[start : start + length])
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        salt = base64.b64decode(header["salt"])
        nonce = base64.b64decode(header["nonce"])
        if header.get("kdf") != "scrypt" or header.get("cipher") != "AES-256-GCM":
            raise ValueError("unsupported algorithms")
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupCryptoError(f"the encryption header is damaged: {exc}") from None
    if not (2 <= n <= MAX_SCRYPT_N and 1 <= r <= 32 and 1 <= p <= 16):
        raise BackupCryptoError("the encryption header asks for unreasonable scrypt parameters")
    prefix = data[: start + length]
    try:
        return AESGCM(_key(passphrase, salt, n, r, p)).decrypt(nonce, data[len(prefix) :], prefix)
    except InvalidTag:
        raise BackupCryptoError("wrong passphrase, or the file is damaged") from None
