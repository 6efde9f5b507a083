"""The issue's reference config, exactly as written (only ca_bundle points at the real file),
against pebble on its usual ports 14000/15000 with httpPort 5002. Skipped when any of those
ports is taken on this machine."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.config.test_tls_config import REFERENCE
from tests.integration.tls_support import Pebble, gateway, s_client_verify, wait_for_issuer

pytestmark = pytest.mark.timeout(60)
PORTS = (14000, 15000, 5002, 5001, 8443, 8444, 8445)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT does not count
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not all(_free(p) for p in PORTS), reason="a reference port is in use")
def test_reference_config_works_as_written(tmp_path: Path) -> None:
    pebble = Pebble.start(tmp_path / "pebble", ports=(14000, 15000, 5002, 5001))
    try:
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())
        text = REFERENCE.replace("/path/to/pebble-listener-ca.pem", str(pebble.listener_ca))
        text = "server: {state_dir: ./state}\n" + text
        with gateway(text, tmp_path / "gw", [8443, 8444, 8445]):
            wait_for_issuer(8443, "gw.test", "CN=temporary")
            assert s_client_verify(8443, "gw.test", root).returncode == 0
            lan_root = tmp_path / "gw/state/tls/packaged-ca/root.pem"
            assert s_client_verify(8444, "gw.lan", lan_root).returncode == 0
            dev_cert = tmp_path / "gw/state/tls/listeners/dev/cert.pem"
            assert s_client_verify(8445, "localhost", dev_cert).returncode == 0
    finally:
        pebble.stop()
