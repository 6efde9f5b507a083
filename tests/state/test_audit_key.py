"""The audit key: from the environment, a given file, or a private file made on first use."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from flm_gateway.config.state_settings import AuditLogSettings
from flm_gateway.state import anchor_path, audit_key_path, open_store
from flm_gateway.state.audit_key import load_audit_key
from flm_gateway.state.chain import AuditKey
from flm_gateway.state.store import StateError
from tests.support.security import loaded


def test_the_default_key_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.key"
    first = load_audit_key(AuditLogSettings(), path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_text().strip()) == 64
    assert load_audit_key(AuditLogSettings(), path) == first
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_a_key_in_the_config_wins_and_never_touches_the_state_directory(tmp_path: Path) -> None:
    settings = AuditLogSettings(key="s" * 40)  # type: ignore[arg-type]
    key = load_audit_key(settings, tmp_path / "audit.key")
    assert key == AuditKey.derive("s" * 40)
    assert not (tmp_path / "audit.key").exists()
    assert "s" * 40 not in repr(key) and key.secret.hex() not in repr(key)


def test_a_configured_key_file_must_exist_and_be_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    settings = AuditLogSettings(key_file=path)
    with pytest.raises(StateError, match=f"the audit key file {path} .* does not exist"):
        load_audit_key(settings, path)
    path.write_text("short\n")
    with pytest.raises(StateError, match="fewer than 32 characters"):
        load_audit_key(settings, path)
    path.write_text("x" * 32 + "\n")
    assert load_audit_key(settings, path) == AuditKey.derive("x" * 32)
    path.write_bytes(b"\xff" * 40)
    with pytest.raises(StateError, match=r"cannot read the audit key file .*: not text"):
        load_audit_key(settings, path)


def _make(path: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(load_audit_key(AuditLogSettings(), Path(path)).fingerprint)


def test_writers_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    path = tmp_path / "audit.key"
    workers = [context.Process(target=_make, args=(str(path), out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len({out.get(timeout=5) for _ in workers}) == 1


def test_open_store_keys_and_anchors_where_the_config_says(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    assert audit_key_path(config) == config.state_dir / "audit.key"
    assert anchor_path(config) == config.state_dir / "audit.anchor"
    store = open_store(config, "cli:test")
    try:
        assert store.audit_key is not None and store.anchor is not None
        assert store.anchor.path == config.state_dir / "audit.anchor"
    finally:
        store.close()
