"""The ACME source's local behaviour: stored certificates, the temporary one, the schedule.

Issuance itself runs against a real pebble in tests/integration/test_tls_acme.py.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from flm_gateway.tls import acme, describe_certificates
from flm_gateway.tls.mode import listener_dir
from flm_gateway.tls.pki import (
    certs_to_pem,
    generate_key,
    make_self_signed,
    renewal_due_at,
    utcnow,
    write_private_key,
)
from tests.tls.helpers import load

CONFIG = """\
listeners:
  - name: acme
    bind: 127.0.0.1:8443
    tls:
      mode: https-acme
      domains: [gw.test]
      acme: {directory: "https://127.0.0.1:14000/dir", http_port: 5002, renew_before: 0.5}
"""


def store(loaded_dir: Path, directory: str, domains: list[str], days: float = 10) -> None:
    key = generate_key()
    cert = make_self_signed(key, domains, days=days)
    write_private_key(loaded_dir / "key.pem", key)
    (loaded_dir / "cert.pem").write_bytes(certs_to_pem([cert]))
    (loaded_dir / "acme.json").write_text(json.dumps({"directory": directory, "domains": domains}))


def test_without_a_stored_certificate_a_temporary_one_is_served_and_logged(
    tmp_path: Path, caplog: object
) -> None:
    loaded = load(CONFIG, tmp_path)
    source = acme.AcmeSource(
        loaded.config.listeners[0], loaded.state_dir, ca_bundle=None, http_tokens=None
    )
    served = source.certificate_for("gw.test")
    assert served.origin == "temporary" and not source.has_certificate
    assert "CN=temporary gw.test" in served.leaf.subject.rfc4514_string()
    now = utcnow()
    assert source.next_attempt(now) == now
    assert "temporary self-signed" in source.status().note
    assert "not issued yet" in describe_certificates(loaded)[0].note


def test_a_matching_stored_certificate_is_served_and_scheduled_for_renewal(tmp_path: Path) -> None:
    loaded = load(CONFIG, tmp_path)
    listener = loaded.config.listeners[0]
    directory = listener_dir(loaded.state_dir, listener)
    store(directory, "https://127.0.0.1:14000/dir", ["gw.test"])
    source = acme.AcmeSource(listener, loaded.state_dir, ca_bundle=None, http_tokens=None)
    assert source.has_certificate
    leaf = source.certificate_for(None).leaf
    assert source.next_attempt(utcnow()) == renewal_due_at(leaf, 0.5)
    assert source.next_attempt(utcnow()) - leaf.not_valid_before_utc > datetime.timedelta(days=4)
    [status] = describe_certificates(loaded)
    assert status.subject == leaf.subject.rfc4514_string() and status.days_left is not None


def test_a_stored_certificate_for_another_directory_or_names_is_not_used(tmp_path: Path) -> None:
    loaded = load(CONFIG, tmp_path)
    listener = loaded.config.listeners[0]
    directory = listener_dir(loaded.state_dir, listener)
    store(directory, "https://other.example/dir", ["gw.test"])
    assert acme.load_stored(directory, "https://127.0.0.1:14000/dir", ["gw.test"]) is None
    store(directory, "https://127.0.0.1:14000/dir", ["other.test"])
    assert acme.load_stored(directory, "https://127.0.0.1:14000/dir", ["gw.test"]) is None
    store(directory, "https://127.0.0.1:14000/dir", ["gw.test"])
    assert acme.load_stored(directory, "https://127.0.0.1:14000/dir", ["gw.test"]) is not None
    (directory / "cert.pem").write_text("garbage")
    assert acme.load_stored(directory, "https://127.0.0.1:14000/dir", ["gw.test"]) is None
