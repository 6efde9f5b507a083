"""The gateway's own certificates, seen by its operators: `chat` trusts them, the metric
reports the served one.

One real gateway with a `packaged-ca` listener first (so `chat`'s default URL is
https) and a `dev-selfsigned` one, in front of a fake vLLM engine. `chat` talks to
both without `--ca-file`; `flm_certificate_expiry_timestamp_seconds` gives the
expiry of the leaf a client receives, not of the packaged-ca root.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.ops_helpers import cli, http_get, threaded_engine
from tests.integration.tls_support import peer_certificate
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import GatewayProcess, free_port, run_gateway

pytestmark = pytest.mark.timeout(90)

CONFIG = """\
server: {{state_dir: "{state_dir}"}}
admin: {{bind: "127.0.0.1:{admin}"}}
listeners:
  - {{name: lan, bind: "127.0.0.1:{port}", tls: {{mode: packaged-ca}}}}
  - {{name: dev, bind: "127.0.0.1:{dev}", tls: {{mode: dev-selfsigned}}}}
engines:
  - {{name: alpha, kind: vllm, url: "{alpha}"}}
"""


@dataclass
class Deployment:
    gateway: GatewayProcess
    engine: FakeEngine
    port: int
    dev: int
    admin: int
    state_dir: Path

    def chat(self, *args: str) -> tuple[int, str]:
        result = cli(
            "chat",
            "--config",
            str(self.gateway.config_path),
            "--model",
            "tiny-a",
            *args,
            stdin="hello\n",
        )
        return result.returncode, result.stdout + result.stderr

    def expiry(self, listener: str) -> float:
        status, text = http_get(f"http://127.0.0.1:{self.admin}/metrics")
        assert status == 200
        [value] = [
            sample.value
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples
            if sample.name == "flm_certificate_expiry_timestamp_seconds"
            and sample.labels["listener"] == listener
        ]
        return value


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp_path = tmp_path_factory.mktemp("own-ca")
    with threaded_engine("vllm", ["tiny-a"]) as engine:
        port, dev, admin = free_port(), free_port(), free_port()
        config = CONFIG.format(
            state_dir=tmp_path / "state", admin=admin, port=port, dev=dev, alpha=engine.url
        )
        with run_gateway(
            config, tmp_path, port=port, health_url=f"http://127.0.0.1:{admin}/readyz"
        ) as gateway:
            yield Deployment(gateway, engine, port, dev, admin, tmp_path / "state")


def test_chat_trusts_the_packaged_ca_root_of_its_gateway(deployment: Deployment) -> None:
    code, output = deployment.chat()  # the URL defaults to the first listener: https
    assert code == 0, output
    assert "tiny-a> w0" in output


def test_chat_trusts_a_dev_selfsigned_certificate_of_its_gateway(deployment: Deployment) -> None:
    code, output = deployment.chat("--url", f"https://127.0.0.1:{deployment.dev}")
    assert code == 0, output
    assert "tiny-a> w0" in output


def test_chat_trusts_only_the_ca_given_with_ca_file(deployment: Deployment, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"  # a valid CA that did not issue the gateway's certificate
    other.write_bytes((deployment.state_dir / "tls/listeners/dev/cert.pem").read_bytes())
    code, output = deployment.chat("--ca-file", str(other))
    assert code == 1
    assert "CERTIFICATE_VERIFY_FAILED" in output


def test_certificate_expiry_is_the_served_leaf_not_the_root(deployment: Deployment) -> None:
    served = peer_certificate(deployment.port, "no-such-name.example")  # the default leaf
    root = x509.load_pem_x509_certificate(
        (deployment.state_dir / "tls/packaged-ca/root.pem").read_bytes()
    )
    assert served.issuer == root.subject
    expiry = deployment.expiry("lan")
    assert expiry == served.not_valid_after_utc.timestamp()
    assert expiry < root.not_valid_after_utc.timestamp()
    dev = peer_certificate(deployment.dev, "localhost")
    assert deployment.expiry("dev") == dev.not_valid_after_utc.timestamp()
