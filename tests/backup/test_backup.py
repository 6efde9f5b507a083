from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
import pytest

from flm_gateway.backup import crypto
from flm_gateway.backup.archive import BackupFormatError, build_payload, read_payload
from flm_gateway.backup.create import collect_state, create_backup
from flm_gateway.backup.restore import RestoreError, apply_restore, open_backup, plan_restore
from flm_gateway.config import LoadedConfig, load_config
from flm_gateway.state.process import LOCK_FILE, PID_FILE, StateDirLock
from tests.integration.ops_helpers import cli

CONFIG = """\
server: {state_dir: ./state}
listeners: [{name: main, bind: "127.0.0.1:8088"}]
engines: [{name: e, url: "http://127.0.0.1:1", api_key: "${ENGINE_KEY:-none}"}]
"""


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "SCRYPT_N", 2**10)


def source(directory: Path, text: str = CONFIG) -> LoadedConfig:
    """A config file in `directory` (its state directory is `directory/state`), loaded."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "flm.yaml").write_text(text)
    return load_config(directory / "flm.yaml")


def make_state(state_dir: Path) -> None:
    (state_dir / "tls" / "packaged-ca").mkdir(parents=True)
    (state_dir / "tls" / "packaged-ca" / "root-key.pem").write_text("-----BEGIN KEY-----\n")
    (state_dir / PID_FILE).write_text("1\n")
    (state_dir / LOCK_FILE).write_text("1\n/etc/flm.yaml\n")
    (state_dir / ".scratch").write_text("x")
    db = sqlite3.connect(state_dir / "state.db")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE api_keys (id TEXT, hash TEXT)")
    db.execute("INSERT INTO api_keys VALUES ('k1', 'h1')")
    db.execute("CREATE TABLE request_log (id INTEGER, ts REAL)")
    db.execute("INSERT INTO request_log VALUES (1, 1.0)")
    db.commit()
    db.close()


def test_collect_state_snapshots_databases_and_skips_runtime_files(tmp_path: Path) -> None:
    make_state(tmp_path)
    files = collect_state(tmp_path)
    assert sorted(files) == ["state.db", "tls/packaged-ca/root-key.pem"]
    copy = tmp_path / "copy.db"
    copy.write_bytes(files["state.db"])
    db = sqlite3.connect(copy)
    assert db.execute("SELECT * FROM api_keys").fetchall() == [("k1", "h1")]
    assert db.execute("SELECT count(*) FROM request_log").fetchone() == (0,)
    db.close()
    with_log = collect_state(tmp_path, include_request_log=True)["state.db"]
    copy.write_bytes(with_log)
    assert sqlite3.connect(copy).execute("SELECT count(*) FROM request_log").fetchone() == (1,)


def test_sealed_roundtrip_and_wrong_passphrase(tmp_path: Path) -> None:
    make_state(tmp_path / "state")
    data = create_backup(source(tmp_path), "correct horse")
    assert crypto.is_sealed(data) and b"root-key" not in data
    contents = open_backup(data, "correct horse")
    assert contents.config == CONFIG
    assert contents.manifest["format"] == "flm-gateway-backup"
    with pytest.raises(RestoreError, match="wrong passphrase"):
        open_backup(data, "wrong")
    with pytest.raises(RestoreError, match="encrypted"):
        open_backup(data, None)
    tampered = bytearray(data)
    tampered[-5] ^= 1
    with pytest.raises(RestoreError, match="wrong passphrase, or the file is damaged"):
        open_backup(bytes(tampered), "correct horse")


def test_unsafe_or_inconsistent_archives_are_refused() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("state/../../etc/passwd")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BackupFormatError, match="unsafe path"):
        read_payload(buffer.getvalue())

    payload = build_payload(CONFIG, {"a.txt": b"hello"})
    read_payload(payload)
    members: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
        for info in tar:
            handle = tar.extractfile(info)
            assert handle is not None
            members[info.name] = handle.read()
    members["state/a.txt"] = b"HELLO"
    repacked = io.BytesIO()
    with tarfile.open(fileobj=repacked, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(BackupFormatError, match="damaged"):
        read_payload(repacked.getvalue())
    with pytest.raises(BackupFormatError, match="not a readable backup"):
        read_payload(b"not a tar")


def test_restore_swaps_in_everything_and_keeps_the_old(tmp_path: Path) -> None:
    make_state(tmp_path / "source" / "state")
    data = create_backup(source(tmp_path / "source"), None)

    target = tmp_path / "target"
    (target / "state").mkdir(parents=True)
    (target / "state" / "old.txt").write_text("old")
    (target / "flm.yaml").write_text("old config")
    plan = plan_restore(open_backup(data, None), target / "flm.yaml")
    assert plan.state_dir == target / "state"
    result = apply_restore(plan)
    assert (target / "flm.yaml").read_text() == CONFIG
    assert (target / "state" / "tls" / "packaged-ca" / "root-key.pem").exists()
    assert not (target / "state" / "old.txt").exists()
    assert result.previous_state is not None and (result.previous_state / "old.txt").exists()
    assert result.previous_config is not None and result.previous_config.read_text() == "old config"
    assert stat.S_IMODE(os.stat(target / "state").st_mode) == 0o700
    assert [p.name for p in target.iterdir() if ".restore-" in p.name] == []


def test_a_failing_swap_is_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_state(tmp_path / "source" / "state")
    data = create_backup(source(tmp_path / "source"), None)
    target = tmp_path / "target"
    (target / "state").mkdir(parents=True)
    (target / "state" / "old.txt").write_text("old")
    (target / "flm.yaml").write_text("old config")
    plan = plan_restore(open_backup(data, None), target / "flm.yaml")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        apply_restore(plan)
    assert (target / "state" / "old.txt").read_text() == "old"
    assert (target / "flm.yaml").read_text() == "old config"
    assert sorted(p.name for p in target.iterdir()) == ["flm.yaml", "state"]


def test_restore_validates_the_config_and_databases(tmp_path: Path) -> None:
    bad_config = build_payload("listeners: []\n", {})
    with pytest.raises(RestoreError, match="listeners"):
        plan_restore(read_payload(bad_config), tmp_path / "flm.yaml")
    damaged = build_payload(CONFIG, {"state.db": b"SQLite format 3\x00" + b"\x00" * 100})
    with pytest.raises(RestoreError, match=r"state/state\.db"):
        plan_restore(read_payload(damaged), tmp_path / "flm.yaml")
    unset = CONFIG.replace("${ENGINE_KEY:-none}", "${FLM_TEST_UNSET_VAR}")
    plan = plan_restore(read_payload(build_payload(unset, {})), tmp_path / "flm.yaml")
    assert any("FLM_TEST_UNSET_VAR" in w for w in plan.warnings)


def test_restore_is_refused_while_a_gateway_runs(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "flm_gateway"])
    try:
        for _ in range(100):  # the child's command line shows once it has exec'd
            if "flm_gateway" in psutil.Process(sleeper.pid).cmdline():
                break
            time.sleep(0.01)
        (tmp_path / "state" / PID_FILE).write_text(f"{sleeper.pid}\n")
        payload = build_payload(CONFIG, {})
        with pytest.raises(RestoreError, match="stop it first"):
            plan_restore(read_payload(payload), tmp_path / "flm.yaml")
    finally:
        sleeper.kill()
        sleeper.wait(5)


def test_restore_is_refused_while_a_gateway_holds_the_state_lock(tmp_path: Path) -> None:
    """A gateway that is starting holds the lock before it writes its pid file."""
    lock = StateDirLock(tmp_path / "state")
    lock.acquire()
    try:
        payload = build_payload(CONFIG, {})
        with pytest.raises(RestoreError, match=f"pid {os.getpid()}.*stop it first"):
            plan_restore(read_payload(payload), tmp_path / "flm.yaml")
    finally:
        lock.release()
    plan_restore(read_payload(payload), tmp_path / "flm.yaml")  # released: restorable


def test_cli_create_and_restore(tmp_path: Path) -> None:
    config = tmp_path / "flm.yaml"
    config.write_text(CONFIG)
    make_state(tmp_path / "state")
    backup = tmp_path / "backup.flmb"
    env = {"BACKUP_PASS": "pw"}
    created = cli(
        "backup",
        "create",
        str(backup),
        "-c",
        str(config),
        "--passphrase-env",
        "BACKUP_PASS",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    assert "encrypted" in created.stdout
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert cli("backup", "create", str(backup), "-c", str(config)).returncode == 1  # exists

    refused = cli("backup", "restore", str(backup), "-c", str(tmp_path / "new" / "flm.yaml"))
    assert refused.returncode == 1 and "passphrase" in refused.stderr
    assert "nothing was changed" in refused.stderr
    (tmp_path / "new").mkdir()
    restored = cli(
        "backup",
        "restore",
        str(backup),
        "-c",
        str(tmp_path / "new" / "flm.yaml"),
        "--passphrase-env",
        "BACKUP_PASS",
        env=env,
    )
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "new" / "state" / "state.db").exists()
    audit = sqlite3.connect(tmp_path / "new" / "state" / "state.db")
    types = [row[0] for row in audit.execute("SELECT type FROM audit ORDER BY seq")]
    audit.close()
    assert types[-1] == "backup.restore"
    manifest_check = json.loads(json.dumps(open_backup(backup.read_bytes(), "pw").manifest))
    assert {f["path"] for f in manifest_check["files"]} == {
        "config/flm.yaml",
        "state/state.db",
        "state/tls/packaged-ca/root-key.pem",
    }


def test_a_state_database_outside_the_state_dir_travels_too(tmp_path: Path) -> None:
    text = CONFIG + "state: {backend: sqlite, sqlite_path: ./db/keys.db}\n"
    make_state(tmp_path / "source" / "state")
    (tmp_path / "source" / "db").mkdir()
    db = sqlite3.connect(tmp_path / "source" / "db" / "keys.db")
    db.execute("CREATE TABLE audit (seq INTEGER)")
    db.execute("INSERT INTO audit VALUES (7)")
    db.commit()
    db.close()
    contents = open_backup(create_backup(source(tmp_path / "source", text), None), None)
    assert contents.store is not None and contents.manifest["store"] == "store/state.db"

    target = tmp_path / "target"
    (target / "db").mkdir(parents=True)
    (target / "db" / "keys.db").write_bytes(b"old")
    (target / "db" / "keys.db-wal").write_bytes(b"stale journal")
    plan = plan_restore(contents, target / "flm.yaml")
    assert plan.store_path == target / "db" / "keys.db"
    apply_restore(plan)
    restored = sqlite3.connect(target / "db" / "keys.db")
    assert restored.execute("SELECT seq FROM audit").fetchall() == [(7,)]
    restored.close()
    assert not (target / "db" / "keys.db-wal").exists()
    kept = sorted(p.name.split(".pre-restore-")[0] for p in (target / "db").iterdir())
    assert kept == ["keys.db", "keys.db", "keys.db-wal"]  # restored, old file, old journal


def test_an_anchor_file_outside_the_state_dir_is_moved_aside(tmp_path: Path) -> None:
    """It describes the log the restore replaces: left in place, it would accuse the restored
    (older) log of being cut short."""
    text = CONFIG + "state: {audit: {anchor_file: ./anchors/audit.anchor}}\n"
    make_state(tmp_path / "source" / "state")
    contents = open_backup(create_backup(source(tmp_path / "source", text), None), None)
    target = tmp_path / "target"
    (target / "anchors").mkdir(parents=True)
    (target / "anchors" / "audit.anchor").write_text('{"seq": 99}\n')
    plan = plan_restore(contents, target / "flm.yaml")
    assert plan.anchor_path == target / "anchors" / "audit.anchor"
    apply_restore(plan)
    (kept,) = (target / "anchors").iterdir()
    assert kept.name.startswith("audit.anchor.pre-restore-") and "99" in kept.read_text()
    inside = plan_restore(
        open_backup(create_backup(source(tmp_path / "s2"), None), None), target / "b.yaml"
    )
    assert inside.anchor_path is None  # in the state directory: restored with it
