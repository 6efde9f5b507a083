from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from flm_gateway.tls import describe_certificates, packaged_ca
from flm_gateway.tls.pki import cert_names
from tests.tls.helpers import load, verify_chain

CONFIG = """\
listeners:
  - name: lan
    bind: 127.0.0.1:8444
    tls: {mode: packaged-ca, hostnames: [gw.lan, "*.apps.lan"]}
  - name: lan2
    bind: 127.0.0.1:8446
    tls: {mode: packaged-ca}
"""


def test_one_root_per_state_dir_generated_once(tmp_path: Path) -> None:
    loaded = load(CONFIG, tmp_path)
    assert "not generated" in describe_certificates(loaded)[0].note
    root = packaged_ca.LocalRoot.load_or_create(loaded.state_dir)
    again = packaged_ca.LocalRoot.load_or_create(loaded.state_dir)
    assert again.cert == root.cert
    assert packaged_ca.root_key_path(loaded.state_dir).stat().st_mode & 0o777 == 0o600
    constraints = root.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    statuses = describe_certificates(loaded)
    assert [s.issuer for s in statuses] == [root.cert.issuer.rfc4514_string()] * 2


def test_leaf_per_sni_chains_to_the_root_and_is_cached(tmp_path: Path) -> None:
    loaded = load(CONFIG, tmp_path)
    source = packaged_ca.PackagedCaSource(loaded.config.listeners[0], loaded.state_dir)
    root = source.root.cert
    for name in ("gw.lan", "x.apps.lan", "localhost", "127.0.0.1"):
        served = source.certificate_for(name)
        assert cert_names(served.leaf) == [name]
        if name != "127.0.0.1":
            verify_chain(served.leaf, root, name)
    assert source.certificate_for("GW.lan.") is source.certificate_for("gw.lan")


def test_unknown_or_missing_sni_gets_the_default_leaf(tmp_path: Path) -> None:
    loaded = load(CONFIG, tmp_path)
    source = packaged_ca.PackagedCaSource(loaded.config.listeners[0], loaded.state_dir)
    default = source.certificate_for(None)
    assert source.certificate_for("evil.example") is default
    assert source.certificate_for("deep.x.apps.lan") is default
    assert cert_names(default.leaf) == ["gw.lan", "*.apps.lan", "localhost", "127.0.0.1"]
    with pytest.raises(x509.verification.VerificationError):
        verify_chain(default.leaf, source.root.cert, "evil.example")


def test_half_a_root_is_an_error_not_a_silent_new_root(tmp_path: Path) -> None:
    loaded = load(CONFIG, tmp_path)
    packaged_ca.LocalRoot.load_or_create(loaded.state_dir)
    packaged_ca.root_key_path(loaded.state_dir).unlink()
    with pytest.raises(FileNotFoundError, match="only half of the root CA"):
        packaged_ca.LocalRoot.load_or_create(loaded.state_dir)
