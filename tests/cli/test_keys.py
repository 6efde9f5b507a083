"""`flm-gateway keys ...`: secrets printed once, only hashes stored, rotation, revocation."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from flm_gateway.cli import main
from flm_gateway.config import load_config
from flm_gateway.security.keys import hash_secret
from flm_gateway.state import open_store
from flm_gateway.state.store import KeyRecord, KeySecret

CONFIG = """\
server: {state_dir: ./state}
listeners:
  - name: main
    bind: 127.0.0.1:8088
    tls: {mode: local-http}
    auth: api-key
routes:
  - {model: chat, engine: alpha}
engines:
  - {name: alpha, kind: vllm, url: "http://127.0.0.1:18001"}
security:
  keys:
    - {id: gitops, hash: "sha256:1111111111111111111111111111111111111111111111111111111111111111"}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "flm.yaml"
    path.write_text(CONFIG)
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_json_list_rotate_revoke(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = ("--config", str(config))
    code, out, _ = run(capsys, "keys", "create", "--name", "ci", *c, "--json")
    assert code == 0
    created = json.loads(out)
    secret, key_id = created["key"], created["id"]
    assert secret.startswith("flm-") and key_id.startswith("key_") and created["status"] == "active"

    database = config.parent / "state" / "state.db"
    dump = "\n".join(sqlite3.connect(database).iterdump())
    assert secret not in dump and hash_secret(secret) in dump

    code, out, _ = run(capsys, "keys", "list", *c)
    assert code == 0 and key_id in out and "gitops" in out and secret not in out
    code, out, _ = run(capsys, "keys", "list", *c, "--json")
    listed = {row["id"]: row for row in json.loads(out)}
    assert listed["gitops"]["source"] == "config" and "key" not in listed[key_id]

    code, out, _ = run(capsys, "keys", "rotate", key_id, "--overlap", "1h", *c, "--json")
    rotated = json.loads(out)
    assert code == 0 and rotated["id"] == key_id and rotated["key"] != secret
    code, out, _ = run(capsys, "keys", "list", *c)
    assert "active (rotating)" in out

    code, out, _ = run(capsys, "keys", "revoke", key_id, *c)
    assert code == 0 and "revoked" in out
    code, _, err = run(capsys, "keys", "revoke", "gitops", *c)
    assert code == 1 and "declared in" in err
    code, _, err = run(capsys, "keys", "rotate", key_id, *c)
    assert code == 1 and "revoked" in err
    code, _, err = run(capsys, "keys", "revoke", "key_nope", *c)
    assert code == 1 and "no key" in err

    code, out, _ = run(capsys, "security", "audit", *c, "--type", "key.", "--json")
    assert [e["type"] for e in json.loads(out)] == ["key.created", "key.rotated", "key.revoked"]
    assert secret not in out and rotated["key"] not in out


def test_scopes_expiry_limits_and_errors(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = ("--config", str(config))
    code, out, _ = run(
        capsys,
        "keys",
        "create",
        "--name",
        "app",
        *c,
        "--json",
        "--scopes",
        "model:tiny-*,route:chat",
        "--scopes",
        "listener:main",
        "--expires",
        "30d",
        "--rpm",
        "5",
        "--max-tokens",
        "100",
    )
    created = json.loads(out)
    assert created["scopes"] == {"models": ["tiny-*"], "routes": ["chat"], "listeners": ["main"]}
    assert created["limits"]["requests_per_minute"] == 5 and created["expires_at"]
    for bad in (
        ["--scopes", "listener:nope"],
        ["--scopes", "route:ghost"],
        ["--scopes", "colour:red"],
        ["--expires", "yesterday"],
        ["--rpm", "0"],
    ):
        code, _, err = run(capsys, "keys", "create", "--name", "x", *c, *bad)
        assert code == 1 and err.startswith("error:"), bad


def test_no_store_prints_a_declaration_and_hash_reads_stdin(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ("--config", str(config))
    code, out, _ = run(capsys, "keys", "create", "--name", "gitops2", *c, "--no-store", "--json")
    printed = json.loads(out)
    assert printed["declaration"]["hash"] == hash_secret(printed["key"])
    code, out, _ = run(capsys, "keys", "list", *c, "--json")
    assert printed["id"] not in out
    monkeypatch.setattr("sys.stdin", io.StringIO(printed["key"] + "\n"))
    code, out, _ = run(capsys, "keys", "hash")
    assert code == 0 and out.strip() == hash_secret(printed["key"])


def test_broken_config_or_store_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners: []\n")
    code, _, err = run(capsys, "keys", "list", "--config", str(bad))
    assert code == 1 and "problem" in err
    blocked = tmp_path / "blocked.yaml"
    (tmp_path / "afile").write_text("x")
    blocked.write_text(CONFIG.replace("./state", str(tmp_path / "afile")))
    code, _, err = run(capsys, "keys", "list", "--config", str(blocked))
    assert code == 1 and "cannot open the state store" in err and "Traceback" not in err


HOSTILE = "ci\x1b]0;owned\x07\u202eevil\r\n"


def test_names_are_printable_and_shown_escaped(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ("--config", str(config))
    code, _, err = run(capsys, "keys", "create", "--name", HOSTILE, *c)
    assert code == 1 and "printable" in err
    # a key stored with such a name by other means (an older version, the store itself)
    store = open_store(load_config(config))
    store.create_key(KeyRecord("key_hostile", HOSTILE, 1.0, (KeySecret("sha256:00", 1.0),)))
    store.close()
    code, out, _ = run(capsys, "keys", "list", *c)
    assert code == 0 and "ci\\x1b]0;owned\\x07\\u202eevil\\x0d\\x0a" in out
    assert not any(char in out.replace("\n", "") for char in "\x1b\x07\u202e\r")
    assert len(out.splitlines()) == 3  # header, gitops, key_hostile
    code, out, _ = run(capsys, "keys", "list", *c, "--json")
    assert out.isascii() and {row["name"] for row in json.loads(out)} >= {HOSTILE}
    code, out, _ = run(capsys, "keys", "revoke", "key_hostile", *c)
    assert code == 0 and "\x1b" not in out and "within 1s" in out


TWO_LISTENERS = """\
server: {state_dir: ./state}
listeners:
  - {name: keyed, bind: "127.0.0.1:8088", auth: api-key}
  - {name: local, bind: "127.0.0.1:8089"}
"""


def test_create_says_where_keys_are_required_and_what_a_scope_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "flm.yaml"
    path.write_text(TWO_LISTENERS)
    c = ("--config", str(path))
    code, out, _ = run(capsys, "keys", "create", "--name", "a", *c)
    assert code == 0
    assert "API keys are required on: keyed\n" in out
    assert "no API key is needed on: local (loopback, no auth:)\n" in out
    assert "note:" not in out
    code, out, _ = run(capsys, "keys", "create", "--name", "b", "--scopes", "listener:local", *c)
    assert code == 0
    assert f"note: listener 'local' requires no key (no auth: api-key in {path})" in out
    code, out, err = run(capsys, "keys", "create", "--name", "c", "--json", *c)
    assert json.loads(out)["name"] == "c"  # stdout stays JSON; the summary goes to stderr
    assert "API keys are required on: keyed" in err


def test_create_says_when_no_listener_requires_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "flm.yaml"
    path.write_text(TWO_LISTENERS.replace(", auth: api-key", ""))
    code, out, _ = run(capsys, "keys", "create", "--name", "a", "--config", str(path))
    assert code == 0
    assert "API keys are required on: no listener" in out
    assert "note: no listener requires a key yet; set auth: api-key" in out
