"""DNS-01 through RFC 2136 dynamic updates to a real BIND (named), validated by a real pebble
that resolves through that BIND. Skipped when named is not installed (apt-get install bind9)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.tls_support import (
    Pebble,
    free_port,
    gateway,
    s_client_verify,
    stop_process,
    wait_for_issuer,
    wait_port,
)

NAMED = shutil.which("named") or "/usr/sbin/named"
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.path.exists(NAMED), reason="needs BIND's named (bind9)"),
]


class Bind:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.secret = base64.b64encode(os.urandom(32)).decode()
        (workdir / "rfc.test.zone").write_text(
            "$TTL 60\n@ IN SOA ns.rfc.test. admin.rfc.test. 1 60 60 600 60\n"
            "@ IN NS ns.rfc.test.\nns IN A 127.0.0.1\n@ IN A 127.0.0.1\n"
        )
        (workdir / "named.conf").write_text(
            f'options {{ directory "{workdir}"; listen-on port {self.port} {{ 127.0.0.1; }};\n'
            f'  listen-on-v6 {{ none; }}; pid-file "{workdir}/named.pid"; recursion no;\n'
            "  dnssec-validation no; };\n"
            f'key "acme-key" {{ algorithm hmac-sha256; secret "{self.secret}"; }};\n'
            f'zone "rfc.test" {{ type primary; file "{workdir}/rfc.test.zone";\n'
            '  allow-update { key "acme-key"; }; };\ncontrols { };\n'
        )
        self.log = (workdir / "named.log").open("wb")
        self.process = subprocess.Popen(
            [NAMED, "-g", "-c", str(workdir / "named.conf"), "-u", "root"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


@pytest.fixture(scope="module")
def bind_and_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Bind, Pebble]]:
    bind = Bind(tmp_path_factory.mktemp("bind"))
    try:
        wait_port(bind.port, process=bind.process)
        pebble = Pebble.start(tmp_path_factory.mktemp("pebble-bind"), f"127.0.0.1:{bind.port}")
        try:
            yield bind, pebble
        finally:
            pebble.stop()
    finally:
        bind.stop()


def test_rfc2136_with_tsig(bind_and_pebble: tuple[Bind, Pebble], tmp_path: Path) -> None:
    bind, pebble = bind_and_pebble
    root = tmp_path / "root.pem"
    root.write_bytes(pebble.root_pem())
    port = free_port()
    config = f"""\
server: {{state_dir: ./state}}
listeners:
  - name: acme
    bind: 127.0.0.1:{port}
    tls:
      mode: https-acme
      domains: [rfc.test]
      acme:
        directory: {pebble.directory}
        ca_bundle: {pebble.listener_ca}
        challenge: dns-01
        dns:
          rfc2136:
            server: 127.0.0.1:{bind.port}
            zone: rfc.test
            key_name: acme-key
            key_secret: ${{TSIG_SECRET}}
          propagation_delay: 0s
"""
    os.environ["TSIG_SECRET"] = bind.secret
    try:
        with gateway(config, tmp_path, [port]) as gw:
            wait_for_issuer(port, "rfc.test", "CN=temporary")
            result = s_client_verify(port, "rfc.test", root)
            assert result.returncode == 0, result.stdout + result.stderr
            assert bind.secret not in gw.wait_log("obtained certificate serial")
    finally:
        del os.environ["TSIG_SECRET"]
