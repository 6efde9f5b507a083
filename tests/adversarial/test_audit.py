"""Class 10: the audit log's tamper evidence and durability, against the real gateway and CLI.

A real gateway (the hardened config: the audit key in the environment, the anchor in the
state directory) answers 401s from fresh client addresses; each answer must find its event
already durable in the store. Then an attacker who can write the state directory (or Redis)
but not read the gateway's environment tampers with copies of that state in every way we
know, and the real `flm-gateway security audit verify` must name what was done (exit 1):
the last records deleted, all of them, the database file itself, a record deleted in the
middle or edited and the chain recomputed, a record inserted, the whole database replaced by a
self-consistent forgery (with its own anchor file), an older copy swapped in (rollback), then
written to again (replay), and the database rolled back together with its anchor file.
What the docs say an attacker CAN hide is tested too: with the key in the state directory a
forger who reads it passes verify, until an anchor kept elsewhere (the logged head, the
metric) is given. Last: kill -9 during a burst of 401s loses no event whose 401 was sent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import redis

from flm_gateway.core.severity import Severity
from flm_gateway.state.anchor import AnchorFile
from flm_gateway.state.chain import AuditKey, link
from flm_gateway.state.redis import RedisStore
from flm_gateway.state.sqlite import SqliteStore
from flm_gateway.state.store import AuditEvent, AuditRecord
from tests.adversarial.harness import (
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    request,
    sources,
)
from tests.support.gateway_process import ROOT, free_port
from tests.support.recording_engine import RecordingEngine
from tests.support.redis_server import redis_server

SECRET = "0123456789abcdef-the-audit-key-lives-in-the-environment"
KEY = AuditKey.derive(SECRET)
GUESSED = AuditKey.derive("an attacker's best guess at the audit key")
ENV = {"FLM_AUDIT_KEY": SECRET}

CONFIG = """\
server: {state_dir: "{state_dir}"}
admin: {bind: "127.0.0.1:ADMIN_PORT"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: api-key}
  - name: open
    bind: "127.0.0.1:OPEN_PORT"
    auth: none
    security: {intrusion: {actions: {high: log}}}
engines:
  - {name: alpha, kind: vllm, url: "ENGINE_URL"}
routes:
  - {model: "tiny-*", engine: alpha}
state:
  audit: {key: "${FLM_AUDIT_KEY}"}
"""
REDIS_STATE = """\
state:
  backend: redis
  redis_url: "REDIS_URL"
  audit: {key: "${FLM_AUDIT_KEY}"}
"""


# -- the attacker's and the operator's tools ---------------------------------------------


def refused(port: int, source: str) -> bool:
    """One request with a wrong key from `source`: True when its 401 arrived."""
    data = request(
        "POST",
        "/v1/chat/completions",
        headers={"Authorization": "Bearer flm-not-a-key"},
        json_body={"model": "tiny-1", "messages": [{"role": "user", "content": "hi"}]},
    )
    try:
        answer = exchange(port, data, source=source, timeout=10)
    except (OSError, AssertionError, ValueError, IndexError):
        return False  # no answer: the client never learnt of a refusal
    if len(answer.body) < int(answer.header("content-length") or 0):
        return False  # cut short (kill -9): not received either
    assert_openai_error(answer, 401, code="invalid_api_key")
    return True


def events_by_ip(records: list[AuditRecord], type_: str = "auth.failed") -> set[str]:
    return {r.event.ip or "" for r in records if r.event.type == type_}


def sqlite_records(state_dir: Path) -> list[AuditRecord]:
    """What any other process reads from the database right now."""
    store = SqliteStore(state_dir / "state.db")
    try:
        return list(store.iter_audit())
    finally:
        store.close()


def write_config(directory: Path, state_dir: Path, extra: str = "") -> Path:
    """A config for the CLI that reads `state_dir` (the gateway's, or a copy); `extra`
    replaces the `state:` section."""
    text = CONFIG.replace("{state_dir}", str(state_dir)).replace("{port}", str(free_port()))
    text = text.replace("ADMIN_PORT", str(free_port())).replace("ENGINE_URL", "http://127.0.0.1:1")
    text = text.replace("OPEN_PORT", str(free_port()))
    if extra:
        text = text.replace('state:\n  audit: {key: "${FLM_AUDIT_KEY}"}\n', extra)
    path = directory / "flm.yaml"
    path.write_text(text)
    return path


@dataclass
class Verdict:
    code: int
    out: str
    report: dict[str, object] = field(default_factory=dict)

    @property
    def problems(self) -> str:
        return "\n".join(p["text"] for p in self.report.get("problems", []))  # type: ignore[attr-defined, index]


def verify_cli(config: Path, *extra: str, env: dict[str, str] | None = None) -> Verdict:
    """The real `flm-gateway security audit verify`, as an operator runs it (text and JSON)."""
    base = [sys.executable, "-m", "flm_gateway", "security", "audit", "verify"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(ENV if env is None else env)}
    runs = [
        subprocess.run(
            [*base, "--config", str(config), *extra, *json_flag],
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
            check=False,
        )
        for json_flag in ([], ["--json"])
    ]
    text, as_json = runs
    assert text.returncode == as_json.returncode, (text.stdout, text.stderr)
    assert "Traceback" not in text.stderr + as_json.stderr, text.stderr + as_json.stderr
    report = json.loads(as_json.stdout) if as_json.stdout.strip() else {}
    return Verdict(text.returncode, text.stdout + text.stderr, report)


def rechain(records: list[AuditRecord], key: AuditKey | None) -> list[AuditRecord]:
    """Renumber and rehash after an edit: what anyone can do without the key."""
    return link([r.event for r in records], None, key)


def keep_macs(forged: list[AuditRecord], original: list[AuditRecord]) -> list[AuditRecord]:
    """Forged records wearing the MACs of the originals at the same place."""
    return [replace(f, mac=o.mac) for f, o in zip(forged, original, strict=False)]


def rewrite_sqlite(state_dir: Path, records: list[AuditRecord]) -> None:
    """Replace every audit row of the database with `records`, as given."""
    database = sqlite3.connect(state_dir / "state.db")
    database.execute("DELETE FROM audit")
    database.executemany(
        "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                r.seq,
                r.event.ts,
                r.event.type,
                r.event.severity.value,
                r.event.ip,
                r.event.key_id,
                r.event.request_id,
                r.event.listener,
                r.event.actor,
                r.event.details_json(),
                r.prev_hash,
                r.hash,
                r.mac,
            )
            for r in records
        ],
    )
    database.commit()
    database.close()


def forged_events(count: int) -> list[AuditEvent]:
    return [
        AuditEvent("config.loaded", Severity.INFO, ts=1.0e9 + n, actor="gateway")
        for n in range(count)
    ]


def copy_sqlite_state(source: Path, target: Path) -> None:
    """A consistent copy of a state directory (the database through SQLite's backup API)."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name.startswith("state.db"):
            continue
        shutil.copy2(item, target / item.name)
    with sqlite3.connect(source / "state.db") as live, sqlite3.connect(target / "state.db") as copy:
        live.backup(copy)


def scrape_head(admin_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = re.search(r"^flm_audit_head_seq (\d+)", text, re.MULTILINE)
    assert found is not None, text
    return int(found[1])


def logged_head(log: str) -> str:
    """The last `audit head` line's `--anchor` argument."""
    heads = re.findall(r"audit head .*?\(verify --anchor (\d+:[0-9a-f]{64})\)", log)
    assert heads, log
    return heads[-1]


def streamed_event_is_durable_at_headers(port: int, state: Path) -> bool:
    """A streamed chat from a scanner User-Agent (logged, not refused, on the `open`
    listener): is its intrusion event in the database the moment the headers arrive?"""
    data = request(
        "POST",
        "/v1/chat/completions",
        headers={"User-Agent": "sqlmap/1.7"},
        json_body={
            "model": "tiny-1",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
        durable = "intrusion.detected" in {r.event.type for r in sqlite_records(state)}
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        assert b"text/event-stream" in head.lower(), head[:400]
        while sock.recv(65536):
            pass
    return durable


# -- one real gateway, its state after 401s from fresh addresses ---------------------------


@dataclass
class Run:
    state: Path
    """The state directory after a graceful stop."""
    older: Path
    """A consistent copy of the state directory taken half-way (rollback material)."""
    refused: list[str]
    durable_at_answer: dict[str, bool]
    stream_event_at_headers: bool
    """A streamed answer's event (logged, not refused) was durable when its headers came."""
    metric_head: int
    log: str
    engine_calls: int


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingEngine]:
    with RecordingEngine(kind="vllm", models=("tiny-1",)) as recording:
        yield recording


@pytest.fixture(scope="module")
def run(engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("audit-run")
    admin = free_port()
    addresses = sources(101)
    refused_from: list[str] = []
    durable: dict[str, bool] = {}
    open_port = free_port()
    config = CONFIG.replace("ADMIN_PORT", str(admin)).replace("OPEN_PORT", str(open_port))
    with gateway_before(engine, tmp, config, env=ENV) as gateway:
        port = port_of(gateway)
        state = tmp / "state"
        for half in range(2):
            for _ in range(6):
                source = next(addresses)
                assert refused(port, source)
                refused_from.append(source)
                # Read by another process the moment the 401 arrived: no flush may be pending.
                durable[source] = source in events_by_ip(sqlite_records(state))
            if half == 0:
                copy_sqlite_state(state, tmp / "older")
        stream_event_at_headers = streamed_event_is_durable_at_headers(open_port, state)
        metric_head = scrape_head(admin)
    return Run(
        state,
        tmp / "older",
        refused_from,
        durable,
        stream_event_at_headers,
        metric_head,
        gateway.log,
        len(engine.calls()),
    )


@pytest.fixture
def copy(run: Run, tmp_path: Path) -> Path:
    """A fresh copy of the run's final state, and a config for the CLI that reads it."""
    shutil.copytree(run.state, tmp_path / "state")
    return write_config(tmp_path, tmp_path / "state")


def state_of(config: Path) -> Path:
    return config.parent / "state"


def test_every_401_is_durable_before_it_is_sent_and_nothing_reaches_the_engine(run: Run) -> None:
    assert len(run.refused) == 12
    assert run.durable_at_answer == dict.fromkeys(run.refused, True)
    assert run.engine_calls == 1  # only the streamed chat of the open listener
    records = sqlite_records(run.state)
    assert events_by_ip(records) == set(run.refused)
    assert all(r.mac and r.mac.startswith(KEY.fingerprint + ":") for r in records)


def test_a_streamed_answers_event_is_durable_before_its_headers(run: Run) -> None:
    assert run.stream_event_at_headers


def test_the_untouched_log_verifies_and_the_outside_anchors_agree(run: Run, copy: Path) -> None:
    verdict = verify_cli(copy)
    assert verdict.code == 0, verdict.out
    assert verdict.out.startswith("audit log intact: ")
    head = f"{verdict.report['head_seq']}:{verdict.report['head_hash']}"
    assert logged_head(run.log) == head  # the INFO line at stop names the same head
    assert run.metric_head == verdict.report["head_seq"]
    assert verify_cli(copy, "--anchor", head, "--anchor", str(run.metric_head)).code == 0


def test_without_the_key_verify_refuses_to_vouch(copy: Path) -> None:
    verdict = verify_cli(copy, env={"FLM_AUDIT_KEY": "someone else's key, not the gateway's"})
    assert verdict.code == 1
    assert "keyed with another key" in verdict.problems


# -- tampering with the SQLite state (copies of it) -------------------------------------------


def delete_where(clause: str) -> Callable[[Path], None]:
    def tamper(state: Path) -> None:
        database = sqlite3.connect(state / "state.db")
        database.execute(f"DELETE FROM audit WHERE {clause}")
        database.commit()
        database.close()

    return tamper


def delete_last(count: int) -> Callable[[Path], None]:
    return delete_where(f"seq > (SELECT MAX(seq) FROM audit) - {count}")


def remove_database(state: Path) -> None:
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (state / name).unlink(missing_ok=True)


def rechained(
    edit: Callable[[list[AuditRecord]], list[AuditRecord]], macs: str
) -> Callable[[Path], None]:
    """Edit the records, recompute the whole chain; MACs: `keep` the old ones, `drop` them,
    or `guess` (computed with a guessed key)."""

    def tamper(state: Path) -> None:
        original = sqlite_records(state)
        forged = rechain(edit(original), GUESSED if macs == "guess" else None)
        if macs == "keep":
            forged = keep_macs(forged, original)
        rewrite_sqlite(state, forged)

    return tamper


def without(seq: int) -> Callable[[list[AuditRecord]], list[AuditRecord]]:
    return lambda records: [r for r in records if r.seq != seq]


def edited(seq: int) -> Callable[[list[AuditRecord]], list[AuditRecord]]:
    def edit(records: list[AuditRecord]) -> list[AuditRecord]:
        return [
            replace(r, event=replace(r.event, ip="198.51.100.99")) if r.seq == seq else r
            for r in records
        ]

    return edit


def inserted(records: list[AuditRecord]) -> list[AuditRecord]:
    extra = replace(records[3], event=replace(records[3].event, type="key.created"))
    return [*records[:4], extra, *records[4:]]


def edited_in_place(state: Path) -> None:
    database = sqlite3.connect(state / "state.db")
    database.execute("UPDATE audit SET ip = '198.51.100.99' WHERE seq = 5")
    database.commit()
    database.close()


def macs_stripped(state: Path) -> None:
    database = sqlite3.connect(state / "state.db")
    database.execute("UPDATE audit SET mac = NULL")
    database.commit()
    database.close()


def forged_database(state: Path) -> None:
    """A whole new self-consistent database and anchor file, keyed with a guessed key."""
    remove_database(state)
    (state / "audit.anchor").unlink()
    anchor = AnchorFile(state / "audit.anchor", GUESSED, "gateway:1", interval=0.0)
    forged = SqliteStore(state / "state.db", GUESSED, anchor)
    forged.append_audit(forged_events(3))
    forged.close()


def forged_unkeyed_database(state: Path) -> None:
    remove_database(state)
    (state / "audit.anchor").unlink()
    forged = SqliteStore(state / "state.db")
    forged.append_audit(forged_events(20))
    forged.close()


def forged_anchor_line(state: Path) -> None:
    """Truncate the log and append a matching anchor line, MAC'd with a guessed key."""
    delete_last(4)(state)
    store = SqliteStore(state / "state.db")
    head = store.audit_head()
    store.close()
    assert head is not None
    AnchorFile(state / "audit.anchor", GUESSED, "gateway:1", interval=0.0).note(head)


TAMPERING = {
    "the last record deleted": (delete_last(1), r"record \d+ missing at the tail"),
    "the last 5 records deleted": (delete_last(5), r"records \d+-\d+ missing at the tail"),
    "every record deleted": (delete_where("1"), r"records 1-\d+ missing at the tail.*log is empty"),
    "the database file deleted": (remove_database, r"records 1-\d+ missing at the tail"),
    "a record deleted in the middle": (delete_where("seq = 4"), r"record 4: missing \(deleted\)"),
    "deleted in the middle, re-chained, old MACs kept": (
        rechained(without(4), "keep"),
        r"records 4-\d+: the MAC does not match",
    ),
    "deleted in the middle, re-chained, MACs dropped": (
        rechained(without(4), "drop"),
        r"records 1-\d+: no record carries a MAC",
    ),
    "deleted in the middle, re-chained, MACs from a guessed key": (
        rechained(without(4), "guess"),
        r"records 1-\d+: keyed with another key",
    ),
    "edited in place": (edited_in_place, r"record 5: the hash does not match the content"),
    "edited and re-chained, old MACs kept": (
        rechained(edited(5), "keep"),
        r"records 5-\d+: the MAC does not match",
    ),
    "a record inserted and re-chained": (
        rechained(inserted, "keep"),
        r"records 5-\d+: the MAC does not match",
    ),
    "every MAC stripped": (macs_stripped, r"records 1-\d+: no record carries a MAC"),
    "replaced by a self-consistent forgery": (
        forged_database,
        r"records 1-3: keyed with another key(.|\n)*audit.anchor line 1 was keyed with another",
    ),
    "replaced by an unkeyed forgery": (
        forged_unkeyed_database,
        r"records 1-20: no record carries a MAC",
    ),
    "cut, with a forged anchor line to match": (
        forged_anchor_line,
        r"records \d+-\d+ missing at the tail(.|\n)*keyed with another key",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampering_is_named_by_verify(copy: Path, name: str) -> None:
    tamper, expected = TAMPERING[name]
    tamper(state_of(copy))
    verdict = verify_cli(copy)
    assert verdict.code == 1, verdict.out
    assert "audit log BROKEN" in verdict.out
    assert re.search(expected, verdict.problems), verdict.problems
    assert verdict.report["ok"] is False and verdict.report["problems"]


def test_an_older_copy_swapped_in_is_caught_by_the_anchor_file(run: Run, copy: Path) -> None:
    state = state_of(copy)
    remove_database(state)
    shutil.copy2(run.older / "state.db", state / "state.db")  # the anchor file stays newer
    verdict = verify_cli(copy)
    assert verdict.code == 1
    assert re.search(r"records \d+-\d+ missing at the tail: audit.anchor line", verdict.problems)


def test_rolled_back_together_with_its_anchor_only_an_outside_anchor_tells(
    run: Run, tmp_path: Path
) -> None:
    shutil.copytree(run.older, tmp_path / "state")
    config = write_config(tmp_path, tmp_path / "state")
    alone = verify_cli(config)
    assert alone.code == 0  # the documented limit: the state directory agrees with itself
    assert alone.report["records"] < run.metric_head
    for outside in (logged_head(run.log), str(run.metric_head)):
        verdict = verify_cli(config, "--anchor", outside)
        assert verdict.code == 1, outside
        assert re.search(
            r"records \d+-\d+ missing at the tail: the anchor .* given on the command line",
            verdict.problems,
        )


def test_with_the_key_in_the_state_directory_a_reader_of_it_can_forge(
    run: Run, tmp_path: Path
) -> None:
    """The documented limit of the default (key file in the state directory): an attacker who
    reads it rewrites log and anchor consistently; only an anchor kept elsewhere tells."""
    shutil.copytree(run.state, tmp_path / "state")
    (tmp_path / "state" / "audit.key").write_text(SECRET + "\n")  # as the default would hold it
    config = write_config(tmp_path, tmp_path / "state", extra="# state: the defaults\n")
    assert verify_cli(config, env={}).code == 0
    stolen = AuditKey.derive((tmp_path / "state" / "audit.key").read_text().strip())
    state = tmp_path / "state"
    original = sqlite_records(state)
    rewrite_sqlite(state, rechain([r for r in original if r.seq != 4][:-2], stolen))
    (state / "audit.anchor").unlink()
    store = SqliteStore(state / "state.db")
    forged_head = store.audit_head()
    store.close()
    assert forged_head is not None
    AnchorFile(state / "audit.anchor", stolen, "gateway:1", interval=0.0).note(forged_head)
    assert verify_cli(config, env={}).code == 0  # undetectable from the state directory
    verdict = verify_cli(config, "--anchor", logged_head(run.log), env={})
    assert verdict.code == 1 and "missing at the tail" in verdict.problems


def test_replay_an_older_copy_and_restart_the_gateway(
    run: Run, engine: RecordingEngine, tmp_path: Path
) -> None:
    """Rollback, then the gateway starts on it and writes again: it notices at start (the
    anchor), records it in the log, and verify names the rewritten record."""
    state = tmp_path / "state"
    shutil.copytree(run.state, state)
    remove_database(state)
    shutil.copy2(run.older / "state.db", state / "state.db")
    config = CONFIG.replace("ADMIN_PORT", str(free_port())).replace("OPEN_PORT", str(free_port()))
    addresses = sources(102)
    with gateway_before(engine, tmp_path, config, env=ENV) as gateway:
        for _ in range(8):
            assert refused(port_of(gateway), next(addresses))
    assert "audit log tampered with: audit.anchor (last line)" in gateway.log
    tampered = [r for r in sqlite_records(state) if r.event.type == "audit.tamper_detected"]
    assert len(tampered) == 1 and tampered[0].event.details["found_by"] == "anchor"
    verdict = verify_cli(tmp_path / "flm.yaml")
    assert verdict.code == 1
    assert re.search(
        r"record \d+ is not the one audit.anchor line \d+ .* recorded", verdict.problems
    ), verdict.problems


# -- Redis: the same attacks on the shared store, and a cut under the running gateway --------


@dataclass
class RedisRun:
    url: str
    state_section: str
    anchor: str
    """The anchor file as it was when the log was intact (restored for each attack)."""
    snapshot: tuple[list[str], str]
    """The Redis log as it was then."""
    refused: list[str]
    log: str
    after_cut: list[AuditRecord]
    """The log as the gateway left it after the cut under it."""

    def records(self) -> list[AuditRecord]:
        store = RedisStore(self.url)
        try:
            return list(store.iter_audit())
        finally:
            store.close()

    def write(self, entries: list[str], head: str | None) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        client.delete("flm:audit", "flm:audit:head")
        if entries:
            client.rpush("flm:audit", *entries)
        if head:
            client.set("flm:audit:head", head)
        client.close()

    def write_records(self, records: list[AuditRecord]) -> None:
        head = f"{records[-1].seq} {records[-1].hash}" if records else None
        self.write([json.dumps(r.to_json()) for r in records], head)


def anchored_up_to(anchor: Path, seq: int) -> bool:
    lines = anchor.read_text().splitlines() if anchor.exists() else []
    return bool(lines) and json.loads(lines[-1])["seq"] == seq


@pytest.fixture(scope="module")
def redis_run(
    engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisRun]:
    tmp = tmp_path_factory.mktemp("audit-redis")
    with redis_server(tmp / "redis") as server:
        state_section = REDIS_STATE.replace("REDIS_URL", server.url)
        config = (
            CONFIG.replace("ADMIN_PORT", str(free_port()))
            .replace("OPEN_PORT", str(free_port()))
            .replace('state:\n  audit: {key: "${FLM_AUDIT_KEY}"}\n', state_section)
        )
        addresses = sources(103)
        refused_from = []
        (tmp / "gw").mkdir()
        anchor = tmp / "gw" / "state" / "audit.anchor"
        with gateway_before(engine, tmp / "gw", config, env=ENV) as gateway:
            port = port_of(gateway)
            for _ in range(8):
                source = next(addresses)
                assert refused(port, source)
                refused_from.append(source)
                store = RedisStore(server.url)
                assert source in events_by_ip(list(store.iter_audit()))  # durable at the answer
                store.close()
            client = redis.Redis.from_url(server.url, decode_responses=True)
            head = int(client.get("flm:audit:head").split()[0])
            wait_until(lambda: anchored_up_to(anchor, head))  # the anchor trails by <= 1s
            snapshot = (client.lrange("flm:audit", 0, -1), client.get("flm:audit:head"))
            kept_anchor = anchor.read_text()
            # Someone with access to Redis cuts the log under the running gateway.
            client.ltrim("flm:audit", 0, 2)
            client.set("flm:audit:head", f"3 {json.loads(client.lindex('flm:audit', 2))['hash']}")
            client.close()
            assert refused(port, next(addresses))
        store = RedisStore(server.url)
        after_cut = list(store.iter_audit())
        store.close()
        yield RedisRun(
            server.url, state_section, kept_anchor, snapshot, refused_from, gateway.log, after_cut
        )


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def redis_copy(redis_run: RedisRun, tmp_path: Path) -> Iterator[Path]:
    """The intact Redis log and its anchor file (a copy), and a config for the CLI."""
    redis_run.write(*redis_run.snapshot)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "audit.anchor").write_text(redis_run.anchor)
    yield write_config(tmp_path, tmp_path / "state", extra=redis_run.state_section)


def test_redis_a_cut_under_the_running_gateway_is_recorded_at_once(redis_run: RedisRun) -> None:
    assert "audit log tampered with: since this gateway's last append, record" in redis_run.log
    records = redis_run.after_cut
    assert [r.event.type for r in records[3:]] == ["audit.tamper_detected", "auth.failed"]
    assert records[3].event.severity is Severity.CRITICAL
    assert "the log now ends at record 3" in records[3].event.details["problem"]


def test_redis_the_intact_log_verifies(redis_run: RedisRun, redis_copy: Path) -> None:
    verdict = verify_cli(redis_copy)
    assert verdict.code == 0, verdict.out
    assert events_by_ip(redis_run.records()) == set(redis_run.refused)


REDIS_TAMPERING: dict[str, tuple[Callable[[list[AuditRecord]], list[AuditRecord]], str]] = {
    "the last 3 records deleted": (lambda r: r[:-3], r"missing at the tail"),
    "every record deleted": (lambda r: [], r"missing at the tail.*log is empty"),
    "an older copy swapped in": (lambda r: r[:4], r"missing at the tail"),
    "deleted in the middle, re-chained": (
        lambda r: keep_macs(rechain([x for x in r if x.seq != 2], None), r),
        r"records 2-\d+: the MAC does not match",
    ),
    "edited and re-chained": (
        lambda r: keep_macs(rechain(edited(2)(r), None), r),
        r"records 2-\d+: the MAC does not match",
    ),
    "replaced by a forgery": (
        lambda r: link(forged_events(len(r)), None, GUESSED),
        r"records 1-\d+: keyed with another key",
    ),
}


@pytest.mark.parametrize("name", list(REDIS_TAMPERING))
def test_redis_tampering_is_named_by_verify(
    redis_run: RedisRun, redis_copy: Path, name: str
) -> None:
    forge, expected = REDIS_TAMPERING[name]
    redis_run.write_records(forge(redis_run.records()))
    verdict = verify_cli(redis_copy)
    assert verdict.code == 1, verdict.out
    assert re.search(expected, verdict.problems), verdict.problems


def test_redis_entries_that_are_not_records_are_an_error_not_a_traceback(
    redis_run: RedisRun, redis_copy: Path
) -> None:
    entries, head = redis_run.snapshot
    redis_run.write([*entries[:2], "{not json", *entries[3:]], head)
    verdict = verify_cli(redis_copy)
    assert verdict.code == 1 and "an audit entry is not a record" in verdict.out


# -- kill -9 in the middle of a burst of 401s --------------------------------------------------


def burst_then_kill(
    port: int, kill: Callable[[], None], third_octet: int, total: int = 160
) -> list[str]:
    """`total` requests from fresh addresses on 16 connections at once; kill -9 the gateway
    once a third were answered. The addresses whose 401 arrived."""
    addresses = [source for source, _ in zip(sources(third_octet), range(total), strict=False)]
    answered: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def one(source: str) -> None:
        if killed.is_set():
            return
        if refused(port, source):
            with lock:
                answered.append(source)
                if len(answered) == total // 3 and not killed.is_set():
                    killed.set()
                    kill()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, addresses))
    assert killed.is_set()
    return answered


def test_kill_9_during_a_burst_loses_no_event_whose_401_was_sent(
    engine: RecordingEngine, tmp_path: Path
) -> None:
    config = CONFIG.replace("ADMIN_PORT", str(free_port())).replace("OPEN_PORT", str(free_port()))
    with gateway_before(engine, tmp_path, config, env=ENV) as gateway:
        answered = burst_then_kill(port_of(gateway), gateway.process.kill, 104)
        gateway.process.wait(10)
        assert gateway.process.returncode == -9
    assert len(answered) >= 160 // 3
    missing = set(answered) - events_by_ip(sqlite_records(tmp_path / "state"))
    assert missing == set(), f"{len(missing)} 401(s) sent without their event"
    assert verify_cli(write_config(tmp_path, tmp_path / "state")).code == 0


def test_kill_9_with_redis(engine: RecordingEngine, tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        config = (
            CONFIG.replace("ADMIN_PORT", str(free_port()))
            .replace("OPEN_PORT", str(free_port()))
            .replace(
                'state:\n  audit: {key: "${FLM_AUDIT_KEY}"}\n',
                REDIS_STATE.replace("REDIS_URL", server.url),
            )
        )
        with gateway_before(engine, tmp_path, config, env=ENV) as gateway:
            answered = burst_then_kill(port_of(gateway), gateway.process.kill, 105)
            gateway.process.wait(10)
        store = RedisStore(server.url)
        stored = events_by_ip(list(store.iter_audit()))
        store.close()
    assert len(answered) >= 160 // 3
    assert set(answered) - stored == set()
