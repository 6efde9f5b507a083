"""Class 9 (log items) and class 4 (logging that cannot flood): what clients send reaches
every human-facing output escaped, the request log keeps every good record, and repeated
errors are rate-limited.

Hostile requests are raw bytes (paths that are not UTF-8, ESC/OSC/CSI sequences, C1
controls, DEL, NUL, bidi overrides, huge paths, headers and model names) sent to the
real gateway; what comes out is read through the real CLI (`flm-gateway logs`,
`security audit`, `keys list`, each its own process) and the gateway's own log file.
A terminal-safe output is valid UTF-8 whose only non-printable characters are line
feeds (and tabs in the process log). Raw ASCII control characters in a request line or
header never reach an output at all: the HTTP layer refuses them before any flow exists
(`mitm_http1`); what still reaches the logs is bytes >= 0x80 (C1 controls, bidi
overrides, non-UTF-8) in paths and headers, and anything JSON can escape in a body.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import resource
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flm_gateway.app.process_logs import REPEAT_BURST
from tests.adversarial.cli import CliResult, run_cli
from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    request,
    sources,
)
from tests.support.gateway_process import GatewayProcess
from tests.support.recording_engine import RecordingEngine

CONFIG = """\
server: {state_dir: "{state_dir}", log_level: debug}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: none}
engines:
  - {name: alpha, kind: vllm, url: "ENGINE_URL"}
routes:
  - {model: tiny, engine: alpha}
security:
  honeypots: ["/.env"]
"""
_sources = sources(19)

# Request targets as raw bytes, each with the X-Request-ID its record is found by. These
# pass the HTTP layer (bytes >= 0x80 are not control characters to HTTP) and reach the
# addons, which refuse them (canonical_target) and log them.
HOSTILE_TARGETS = {
    "bytes": b"/v1/\xff\xfe/models",  # not UTF-8: the record that used to sink its batch
    "overlong": b"/v1/chat/completions\xc0\xaf",
    "c1": b"/v1/\xc2\x9b31m\xc2\x85/models",  # CSI and NEL as UTF-8 C1 controls
    "raw-c1": b"/v1/\x9b31m",  # a raw 0x9b byte (8-bit CSI)
    "bidi": b"/v1/\xe2\x80\xaesledom\xe2\x81\xa6",
    "separators": b"/v1/a\xe2\x80\xa8b\xe2\x80\xa9c",
}
# These never get that far: the HTTP layer refuses a request line with a control
# character (400) or too long (414) before any flow exists, so they reach no log at all.
REFUSED_BY_HTTP = {
    "esc": (b"/v1/\x1b[2J\x1b]0;owned\x07/models", 400),
    "del-nul": (b"/v1/mo\x7fde\x00ls", 400),
    "huge": (b"/v1/" + b"a" * 100_000, 414),
}
UNSAFE = ("\x1b", "\x07", "\x9b", "\x85", "\u202e", "\u2066", "\x7f", "\x00", "\u2028", "\r")


def terminal_safe(data: bytes, *, tabs: bool = False) -> str:
    """`data` decoded; fails if a terminal could be driven or text reordered by it."""
    text = data.decode("utf-8")  # strict: nothing that is not UTF-8
    allowed = "\n\t" if tabs else "\n"
    bad = sorted({c for c in text if not c.isprintable() and c not in allowed})
    assert not bad, [hex(ord(c)) for c in bad]
    return text


@dataclass
class Logged:
    gateway: GatewayProcess
    engine: RecordingEngine

    @property
    def port(self) -> int:
        return port_of(self.gateway)

    def raw(
        self, method: bytes, target: bytes, request_id: str, *extra: bytes, body: bytes = b""
    ) -> Answer:
        head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: %s\r\n" % (
            method,
            target,
            request_id.encode(),
        )
        data = head + b"".join(extra) + b"Connection: close\r\n\r\n" + body
        return exchange(self.port, data, source=next(_sources))

    def cli(self, *args: str) -> CliResult:
        result = run_cli(self.gateway.config_path, *args)
        assert result.code == 0, result.stderr
        return result

    def records(self) -> dict[str, dict[str, Any]]:
        rows = self.cli("logs", "--json", "--limit", "1000").json
        return {row["request_id"]: row for row in rows}

    def wait_for_record(self, *request_ids: str) -> dict[str, dict[str, Any]]:
        """Every record, once those of `request_ids` are written (at most 10 s)."""
        deadline = time.monotonic() + 10
        while missing := set(request_ids) - set(records := self.records()):
            assert time.monotonic() < deadline, f"never written: {sorted(missing)}"
            time.sleep(0.2)
        return records


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    with (
        RecordingEngine(kind="vllm") as engine,
        gateway_before(engine, tmp_path_factory.mktemp("log-safety"), CONFIG) as gateway,
    ):
        yield Logged(gateway, engine)


# -- the request log keeps every good record, and stores bad ones safely ------------


def test_one_bad_record_never_costs_its_neighbours(logged: Logged) -> None:
    huge_model = {"model": "tiny\x1b[31m\u202e" + "m" * 100_000, "messages": []}
    big_header = b"X-Pad: " + b"A" * 7_000 + b"\r\nUser-Agent: \xc2\x9b2J\xff\r\n"
    jobs: list[tuple[str, bytes, bytes, tuple[bytes, ...]]] = []
    for n in range(3):  # the hostile ones among neighbours, sent at once: one batch
        jobs.append((f"before-{n}", b"GET", b"/v1/models", ()))
        for name, target in HOSTILE_TARGETS.items():
            jobs.append((f"{name}-{n}", b"GET", target, ()))
        jobs.append((f"header-{n}", b"GET", b"/v1/models", (big_header,)))
        jobs.append((f"after-{n}", b"GET", b"/v1/models", ()))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda job: logged.raw(job[1], job[2], job[0], *job[3]), jobs))
        body = json.dumps(huge_model).encode()
        model_answer = logged.raw(
            b"POST",
            b"/v1/chat/completions",
            "model",
            b"Content-Type: application/json\r\n",
            b"Content-Length: %d\r\n" % len(body),
            body=body,
        )
    assert all(a.status in (200, 400, 404) for a in answers), [a.status for a in answers]
    assert model_answer.status == 404
    records = logged.wait_for_record("model", *(job[0] for job in jobs))
    for row in records.values():
        for value in row.values():
            if isinstance(value, str):
                assert value.isprintable() and len(value) <= 6 * 200, value[:80]
    assert records["bytes-0"]["path"] == "/v1/\\xff\\xfe/models"
    assert records["c1-0"]["path"] == "/v1/\\x9b31m\\x85/models"
    assert not any(name.startswith("esc") for name in records)
    assert records["bidi-0"]["path"] == "/v1/\\u202esledom\\u2066"
    assert records["header-0"]["status"] == 200
    assert records["model"]["model"].startswith("tiny\\x1b[31m\\u202emmm")


def test_logs_table_and_json_are_terminal_safe(logged: Logged) -> None:
    logged.raw(b"GET", HOSTILE_TARGETS["c1"], "table-c1")
    logged.raw(b"GET", HOSTILE_TARGETS["bytes"], "table-bytes")
    logged.wait_for_record("table-bytes")
    table = logged.cli("logs", "--limit", "1000")
    text = terminal_safe(table.stdout)
    lines = text.splitlines()
    rows = [line for line in lines[1:] if line.split()]
    assert len(rows) == len(logged.records())  # one line per record: nothing broke a line
    assert any("/v1/\\x9b31m\\x85/models" in line for line in lines)
    assert any("/v1/\\xff\\xfe/models" in line for line in lines)
    as_json = logged.cli("logs", "--json", "--limit", "1000")
    assert as_json.stdout.isascii()
    terminal_safe(as_json.stdout)
    stats = logged.cli("logs", "stats", "--by", "model")
    terminal_safe(stats.stdout)


# -- the process log -----------------------------------------------------------------

_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d [A-Z]+ +[\w.]+: ")


def test_the_process_log_shows_client_text_escaped(logged: Logged) -> None:
    for name, target in HOSTILE_TARGETS.items():
        logged.raw(b"GET", target, f"plog-{name}")
    for name, (target, status) in REFUSED_BY_HTTP.items():
        assert_openai_error(logged.raw(b"GET", target, f"plog-{name}"), status)
    refused = logged.raw(b"G\x1b]0;x\x07ET", b"/v1/models", "plog-method")
    assert_openai_error(refused, 400, code="invalid_http")
    logged.raw(b"GET", b"/v1/models", "plog-last")
    logged.wait_for_record("plog-last")
    raw = logged.gateway.log_path.read_bytes()
    text = terminal_safe(raw, tabs=True)
    for line in text.splitlines():  # a client cannot start a line: records or indented
        assert _RECORD_START.match(line) or line.startswith("    "), line[:120]
    assert "plog-c1 GET /v1/\\x9b31m\\x85/models" in text  # the access log
    assert "/v1/\\xff\\xfe/models" in text
    assert "plog-esc" not in text and "plog-method" not in text  # never a flow


# -- the audit log and the admin commands ---------------------------------------------


def test_audit_and_keys_show_client_text_escaped(logged: Logged, tmp_path: Path) -> None:
    decoys = [b"/.env/\xc2\x9b2J\xff", b"/.env/\xe2\x80\xae", b"/.env/../../etc/passwd\xc2\x85"]
    for n, target in enumerate(decoys):
        logged.raw(b"GET", target, f"audit-{n}")
    logged.raw(b"GET", b"/.env", "audit-clean")  # written after them: nothing stuck
    deadline = time.monotonic() + 10
    while True:  # the clean one was sent last: once it is written, so are the others
        events = logged.cli("security", "audit", "--json", "--limit", "1000").json
        paths = {e["details"].get("path") for e in events}
        if "/.env" in paths:
            break
        assert time.monotonic() < deadline, paths
        time.sleep(0.2)
    assert {"/.env/\\x9b2J\\xff", "/.env/../../etc/passwd\\x85"} <= paths
    assert any(p and p.startswith("/.env/\\u202e") for p in paths)
    table = logged.cli("security", "audit", "--limit", "1000")
    text = terminal_safe(table.stdout)
    assert len(text.splitlines()) == len(events) + 1  # one line per event
    assert logged.cli("security", "audit", "verify").code == 0
    assert logged.cli("security", "audit", "--json").stdout.isascii()
    refused = run_cli(logged.gateway.config_path, "keys", "create", "--name", "ci\x1b]0;x\x07")
    assert refused.code == 1 and b"printable" in refused.stderr
    assert [
        k for k in logged.cli("keys", "list", "--json").json if k["name"].startswith("ci")
    ] == []
    terminal_safe(logged.cli("keys", "list").stdout)


# -- repeated errors cannot flood the log ---------------------------------------------


class StallingEngine:
    """An engine that accepts connections and reads requests, but never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self._held.append(self._sock.accept()[0])
            except TimeoutError:
                continue

    def __enter__(self) -> StallingEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()


FLOOD_CONFIG = """\
server: {state_dir: "{state_dir}", log_level: debug}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: none}
engines:
  - {name: alpha, kind: vllm, url: "ENGINE_URL"}
  - name: slow
    kind: openai
    url: "http://127.0.0.1:STALL_PORT"
    models: [slow]
    timeouts: {response: 200ms}
    health: {interval: 1h, timeout: 300ms}
routes:
  - {model: tiny, engine: alpha}
  - {model: slow, engine: slow}
"""


def test_repeated_errors_are_rate_limited_in_json_lines(tmp_path: Path) -> None:
    with RecordingEngine(kind="vllm") as engine, StallingEngine() as stalling:
        config = FLOOD_CONFIG.replace("STALL_PORT", str(stalling.port))
        with gateway_before(engine, tmp_path, config, args=("--log-format", "json")) as gateway:
            port = port_of(gateway)
            chat = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
            with concurrent.futures.ThreadPoolExecutor(20) as pool:
                timed_out = list(
                    pool.map(
                        lambda _: exchange(
                            port, request("POST", "/v1/chat/completions", json_body=chat)
                        ),
                        range(40),
                    )
                )
            for answer in timed_out:
                assert_openai_error(answer, 504)
            hostile = exchange(port, b"GET /v1/\xc2\x9b2J\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert hostile.status == 400
            # the example: more connections than file descriptors
            pid = gateway.process.pid
            soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (64, hard))
            held = []
            for _ in range(150):
                conn = socket.socket()
                conn.settimeout(1)
                try:
                    conn.connect(("127.0.0.1", port))
                except OSError:
                    conn.close()
                    break
                held.append(conn)
            time.sleep(2)
            for conn in held:
                conn.close()
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
            gateway.stop()  # summaries of what was suppressed are written at shutdown
        raw = gateway.log_path.read_bytes()
    assert len(raw) < 64 * 1024, len(raw)
    lines = [json.loads(line) for line in terminal_safe(raw).splitlines()]  # all JSON lines
    assert raw.isascii()
    for line in lines:
        assert all(c.isprintable() for c in line["msg"]), line["msg"]
    assert any("/v1/\\x9b2J\\xff" in line["msg"] for line in lines)
    summaries = [line for line in lines if "similar message(s) suppressed" in line["msg"]]
    shown = [line for line in lines if line not in summaries]
    no_headers = [line for line in shown if "sent no response headers" in line["msg"]]
    assert len(no_headers) == REPEAT_BURST
    (summary,) = [s for s in summaries if "engine slow sent no response headers" in s["msg"]]
    assert summary["msg"].startswith(f"{len(timed_out) - REPEAT_BURST} similar message(s)")
    assert summary["level"] == "warning"
    # Out of descriptors, the accept loop fails over and over (and, recovering, fails
    # differently): per kind of error, at most one traceback, a few lines and one summary.
    accept_errors = [line for line in shown if line["msg"].startswith("Unhandled error in task")]
    kinds: dict[str, list[dict[str, Any]]] = {}
    for line in accept_errors:
        error = line["exc"].rsplit("\n", 1)[-1] if "exc" in line else line["msg"][25:]
        kinds.setdefault(error.split(" (repeated", 1)[0].strip("[] "), []).append(line)
    for error, same in kinds.items():
        assert len(same) <= REPEAT_BURST, error
        assert sum("exc" in line for line in same) <= 1, error
        assert sum(s["msg"].endswith(f"Unhandled error in task. [{error}]") for s in summaries) <= 1
