from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from flm_gateway.tls import pki


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("gw.lan", "gw.lan", True),
        ("gw.lan", "GW.LAN.", True),
        ("*.gw.lan", "a.gw.lan", True),
        ("*.gw.lan", "gw.lan", False),
        ("*.gw.lan", "a.b.gw.lan", False),
        ("gw.lan", "x.gw.lan", False),
    ],
)
def test_name_matches_follows_rfc6125(pattern: str, name: str, expected: bool) -> None:
    assert pki.name_matches(pattern, name) is expected


def test_safe_dir_name_keeps_simple_names_and_hashes_others() -> None:
    assert pki.safe_dir_name("lan-1") == "lan-1"
    odd = pki.safe_dir_name("../etc/passwd")
    assert "/" not in odd and odd != pki.safe_dir_name("../etc/shadow")
    assert pki.safe_dir_name("..") != ".."


def test_private_keys_are_0600_and_world_readable_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "key.pem"
    key = pki.generate_key()
    pki.write_private_key(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert pki.read_private_key(path).public_key() == key.public_key()
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        pki.read_private_key(path)


def test_key_types() -> None:
    assert pki.generate_key("ec384").curve.name == "secp384r1"  # type: ignore[union-attr]
    assert pki.generate_key("rsa2048").key_size == 2048
    with pytest.raises(ValueError, match="unknown key type"):
        pki.generate_key("dsa")


def test_self_signed_has_the_names_and_renewal_point() -> None:
    key = pki.generate_key()
    cert = pki.make_self_signed(key, ["localhost", "127.0.0.1", "::1"], days=30)
    assert pki.cert_names(cert) == ["localhost", "127.0.0.1", "::1"]
    assert 0.95 < pki.lifetime_left(cert) <= 1
    due = pki.renewal_due_at(cert, 1 / 3)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs((cert.not_valid_after_utc - due) - lifetime / 3) < datetime.timedelta(seconds=1)
