"""Config helpers for the TLS unit tests."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.x509 import DNSName
from cryptography.x509.verification import PolicyBuilder, Store

from flm_gateway.config import LoadedConfig, parse_config


def load(text: str, directory: Path) -> LoadedConfig:
    """Validate `text` as if it were `directory`/flm.yaml (state under directory/state)."""
    if "state_dir" not in text:
        text = "server: {state_dir: ./state}\n" + text
    config, state_dir = parse_config(text, environ={}, base_dir=directory)
    return LoadedConfig(
        config=config, path=directory / "flm.yaml", state_dir=state_dir, source=text
    )


def verify_chain(leaf: x509.Certificate, root: x509.Certificate, name: str) -> None:
    """Raises unless `leaf` chains to `root` and is valid for the DNS `name` (RFC 5280)."""
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(DNSName(name))
    verifier.verify(leaf, [])
