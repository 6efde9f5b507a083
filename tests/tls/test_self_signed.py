from __future__ import annotations

from pathlib import Path

import pytest

from flm_gateway.tls import describe_certificates, self_signed
from flm_gateway.tls.pki import cert_names
from tests.tls.helpers import load

CONFIG = """\
listeners:
  - name: dev
    bind: 127.0.0.1:8445
    tls: {{mode: dev-selfsigned, hostnames: [{names}]}}
"""


def test_generated_once_kept_across_restarts_and_0600(tmp_path: Path) -> None:
    loaded = load(CONFIG.format(names="dev.local"), tmp_path)
    listener = loaded.config.listeners[0]
    [status] = describe_certificates(loaded)
    assert status.subject is None and "not generated" in status.note
    first = self_signed.SelfSignedSource(listener, loaded.state_dir).certificate_for(None)
    assert sorted(cert_names(first.leaf)) == sorted(["dev.local", "localhost", "127.0.0.1"])
    key_file = loaded.state_dir / "tls/listeners/dev/key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    again = self_signed.SelfSignedSource(listener, loaded.state_dir).certificate_for("x")
    assert again.fingerprint == first.fingerprint
    [status] = describe_certificates(loaded)
    assert status.subject == "O=flm-gateway,CN=dev.local" and status.days_left is not None
    assert 364 < status.days_left <= 365


def test_regenerated_when_the_names_change(tmp_path: Path) -> None:
    before = load(CONFIG.format(names="dev.local"), tmp_path)
    first = self_signed.SelfSignedSource(before.config.listeners[0], before.state_dir)
    after = load(CONFIG.format(names="dev.local, other.local"), tmp_path)
    [status] = describe_certificates(after)
    assert "regenerated" in status.note
    second = self_signed.SelfSignedSource(after.config.listeners[0], after.state_dir)
    assert second.certificate_for(None).fingerprint != first.certificate_for(None).fingerprint
    assert "other.local" in cert_names(second.certificate_for(None).leaf)


def test_a_world_readable_key_is_refused(tmp_path: Path) -> None:
    loaded = load(CONFIG.format(names="dev.local"), tmp_path)
    self_signed.SelfSignedSource(loaded.config.listeners[0], loaded.state_dir)
    (loaded.state_dir / "tls/listeners/dev/key.pem").chmod(0o644)
    with pytest.raises(PermissionError):
        self_signed.SelfSignedSource(loaded.config.listeners[0], loaded.state_dir)


def test_wildcard_bind_covers_loopback_and_interfaces(tmp_path: Path) -> None:
    text = CONFIG.format(names="dev.local").replace("127.0.0.1:8445", "0.0.0.0:8445")
    loaded = load(text.replace("tls:", "auth: none\n    tls:"), tmp_path)
    source = self_signed.SelfSignedSource(loaded.config.listeners[0], loaded.state_dir)
    names = cert_names(source.certificate_for(None).leaf)
    assert {"dev.local", "localhost", "127.0.0.1", "::1"} <= set(names)
