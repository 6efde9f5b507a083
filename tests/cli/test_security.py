"""`flm-gateway security ...`: block list management and audit queries/verification."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from flm_gateway.cli import main
from flm_gateway.config import load_config
from flm_gateway.state import open_store
from flm_gateway.state.store import AuditEvent

CONFIG = """\
server: {state_dir: ./state}
listeners:
  - {name: main, bind: 127.0.0.1:8088}
security:
  ip: {block: ["203.0.113.0/24"]}
"""


@pytest.fixture
def c(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "flm.yaml"
    path.write_text(CONFIG)
    return ("--config", str(path))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_blocklist(c: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "security", "blocklist", "add", "192.0.2.7", *c)[0] == 0
    assert (
        run(
            capsys,
            "security",
            "blocklist",
            "add",
            "2001:db8::/32",
            "--duration",
            "1h",
            "--reason",
            "abuse",
            *c,
        )[0]
        == 0
    )
    code, out, _ = run(capsys, "security", "blocklist", "list", *c, "--json")
    rows = {row["cidr"]: row for row in json.loads(out)}
    assert set(rows) == {"203.0.113.0/24", "192.0.2.7/32", "2001:db8::/32"}
    assert rows["203.0.113.0/24"]["source"] == "config"
    assert rows["2001:db8::/32"]["reason"] == "abuse" and rows["2001:db8::/32"]["expires_at"]
    code, out, _ = run(capsys, "security", "blocklist", "list", *c)
    assert "192.0.2.7/32" in out and "never" in out
    assert run(capsys, "security", "blocklist", "remove", "192.0.2.7", *c)[0] == 0
    code, _, err = run(capsys, "security", "blocklist", "remove", "192.0.2.7", *c)
    assert code == 1 and "not in the stored block list" in err
    code, _, err = run(capsys, "security", "blocklist", "remove", "203.0.113.0/24", *c)
    assert code == 1 and "remove it there" in err
    code, _, err = run(capsys, "security", "blocklist", "add", "not-an-ip", *c)
    assert code == 1
    code, out, _ = run(capsys, "security", "blocklist", "clear", *c)
    assert code == 0 and "removed 1" in out


def test_audit_queries_and_verify(
    c: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "security", "blocklist", "add", "192.0.2.7", *c)
    run(capsys, "security", "blocklist", "remove", "192.0.2.7", *c)
    code, out, _ = run(capsys, "security", "audit", *c, "--json")
    events = json.loads(out)
    assert [e["type"] for e in events] == ["ip.blocked", "ip.unblocked"]
    assert events[0]["ip"] == "192.0.2.7/32" and events[0]["actor"].startswith("cli:")
    code, out, _ = run(
        capsys,
        "security",
        "audit",
        *c,
        "--ip",
        "192.0.2.7/32",
        "--since",
        "1h",
        "--severity",
        "medium",
    )
    assert code == 0 and "ip.unblocked" in out
    code, out, _ = run(capsys, "security", "intrusion", *c)
    assert code == 0 and "no matching events" in out
    code, out, _ = run(capsys, "security", "anomaly", *c, "--json")
    assert json.loads(out) == []
    code, out, _ = run(capsys, "security", "audit", "verify", *c)
    assert code == 0 and "intact: 2 record(s)" in out
    assert "records 1-2 keyed" in out and "anchors checked: 2, newest held: record 2" in out

    database = sqlite3.connect(tmp_path / "state" / "state.db")
    database.execute("UPDATE audit SET ip = '10.0.0.1' WHERE seq = 1")
    database.commit()
    database.close()
    code, out, _ = run(capsys, "security", "audit", "verify", *c, "--json")
    report = json.loads(out)
    assert code == 1 and not report["ok"] and report["first_bad_seq"] == 1


def test_verify_takes_anchors_kept_elsewhere(
    c: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in range(1, 5):
        run(capsys, "security", "blocklist", "add", f"192.0.2.{n}", *c)
    code, out, _ = run(capsys, "security", "audit", "verify", *c, "--json")
    report = json.loads(out)
    head = f"{report['head_seq']}:{report['head_hash']}"
    assert code == 0 and report["anchored_to"] == 4
    shipped = tmp_path / "shipped.anchor"
    shipped.write_bytes((tmp_path / "state" / "audit.anchor").read_bytes())
    # Roll the log and its anchor file back together, to two records.
    database = sqlite3.connect(tmp_path / "state" / "state.db")
    database.execute("DELETE FROM audit WHERE seq > 2")
    database.commit()
    database.close()
    anchor = tmp_path / "state" / "audit.anchor"
    anchor.write_text("".join(anchor.read_text().splitlines(keepends=True)[:2]))
    code, out, _ = run(capsys, "security", "audit", "verify", *c)
    assert code == 0  # the state directory alone agrees with itself
    assert "records 3-4" not in out
    for extra in (["--anchor", head], ["--anchor", "4"], ["--anchor-file", str(shipped)]):
        code, out, _ = run(capsys, "security", "audit", "verify", *c, *extra)
        assert code == 1 and "records 3-4 missing at the tail" in out, (extra, out)
        assert "the log ends at record 2" in out
    with pytest.raises(SystemExit) as exited:
        main(["security", "audit", "verify", *c, "--anchor", "4:nothex"])
    assert exited.value.code == 2
    assert "is not SEQ or SEQ:HASH" in capsys.readouterr().err


def test_audit_shows_client_text_escaped(
    c: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(load_config(Path(c[1])))
    details = {"path": "/.env\x1b[2J\u202e\r\nforged", "method": "G\x9bET"}
    store.append_audit([AuditEvent("honeypot.hit", request_id="r\x1b1", details=details)])
    store.close()
    code, out, _ = run(capsys, "security", "audit", *c)
    assert code == 0 and len(out.splitlines()) == 2
    assert "path=/.env\\x1b[2J\\u202e\\x0d\\x0aforged" in out and "G\\x9bET" in out
    assert not any(char in out.replace("\n", "") for char in "\x1b\u202e\r\x9b")
    code, out, _ = run(capsys, "security", "audit", *c, "--json")
    assert out.isascii() and json.loads(out)[0]["details"] == details
