"""https-acme with external account binding, against a real pebble that requires it.

Without `acme.eab` the order fails with an error naming the setting to add; with a
wrong HMAC key the CA's refusal is reported; with the right one a certificate is
issued. The HMAC key never appears in the log.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_tls_acme import TEMPORARY, acme_config, http01_block
from tests.integration.tls_support import Pebble, free_port, gateway, wait_for_issuer

pytestmark = pytest.mark.timeout(60)

KEY_ID = "kid-flm"
HMAC_KEY = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = Pebble.start(tmp_path_factory.mktemp("pebble-eab"), eab_keys={KEY_ID: HMAC_KEY})
    try:
        yield server
    finally:
        server.stop()


def eab_block(key_id: str, hmac_key: str) -> str:
    return f'        eab: {{key_id: {key_id}, hmac_key: "{hmac_key}"}}\n'


def test_a_missing_binding_names_the_setting_to_add(pebble: Pebble, tmp_path: Path) -> None:
    port = free_port()
    with gateway(
        acme_config(pebble, port, http01_block(pebble, "[eab.test]")), tmp_path, [port]
    ) as gw:
        log = gw.wait_log("ACME order for eab.test failed")
    assert "the CA requires external account binding: set tls.acme.eab" in log


def test_a_wrong_hmac_key_is_refused_and_never_logged(pebble: Pebble, tmp_path: Path) -> None:
    port = free_port()
    wrong = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    block = http01_block(pebble, "[eab.test]", extra=eab_block(KEY_ID, wrong))
    with gateway(acme_config(pebble, port, block), tmp_path, [port]) as gw:
        log = gw.wait_log("ACME order for eab.test failed")
    line = next(line for line in log.splitlines() if "ACME order for eab.test failed" in line)
    assert "the CA refused" in line
    assert wrong not in log


def test_the_right_binding_gets_a_certificate(
    pebble: Pebble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    block = http01_block(pebble, "[eab.test]", extra=eab_block(KEY_ID, "${EAB_HMAC}"))
    monkeypatch.setenv("EAB_HMAC", HMAC_KEY)  # inherited by the gateway process
    with gateway(acme_config(pebble, port, block), tmp_path, [port]) as gw:
        cert = wait_for_issuer(port, "eab.test", TEMPORARY)
        gw.wait_log("obtained certificate serial")
        log = gw.log()
    assert "Pebble" in cert.issuer.rfc4514_string()
    assert HMAC_KEY not in log
