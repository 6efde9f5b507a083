from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from flm_gateway.app.process_logs import (
    MAX_RECORD,
    REPEAT_BURST,
    REPEAT_WINDOW,
    SITE_BURST,
    GatewayLogHandler,
    JsonFormatter,
    RepeatLimiter,
    TextFormatter,
    redact,
    setup_logging,
)

SECRETS = [
    ("Authorization: Bearer sk-live-0123456789abcdef", "sk-live-0123456789abcdef"),
    ('{"authorization": "Bearer abc.def.ghi"}', "abc.def.ghi"),
    ("x-api-key=supersecretvalue", "supersecretvalue"),
    ("used key sk-0123456789abcdefghij for it", "0123456789abcdefghij"),
    ("cookie: session=deadbeefcafe", "deadbeefcafe"),
    ("basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
]


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_redact_masks_credentials(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "[redacted]" in redact(text)


def test_redact_keeps_ordinary_text() -> None:
    text = "engine vllm marked down: connect failed (Connection refused)"
    assert redact(text) == text


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("flm_gateway.test", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_have_the_documented_fields() -> None:
    line = JsonFormatter().format(
        record("routed %s", "x", request_id="r1", model="m", status=200, listener="main")
    )
    payload = json.loads(line)
    assert payload["level"] == "warning" and payload["logger"] == "flm_gateway.test"
    assert payload["msg"] == "routed x"
    assert payload["request_id"] == "r1" and payload["status"] == 200
    assert payload["ts"].endswith("+00:00")


def test_json_and_text_redact_messages_and_tracebacks() -> None:
    try:
        raise ValueError("Authorization: Bearer topsecret-token")
    except ValueError:
        exc_info = sys.exc_info()
    rec = record("header was Bearer topsecret-token")
    rec.exc_info = exc_info
    for formatter in (JsonFormatter(), TextFormatter()):
        assert "topsecret-token" not in formatter.format(rec)


def test_setup_logging_json(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "json")
        logging.getLogger("flm_gateway.x").info("hello")
        logging.getLogger("mitmproxy.proxy").info("connect chatter")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["hello"]


def test_a_worker_tags_its_records(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    lines = {}
    try:
        for log_format in ("text", "json"):
            stream = io.StringIO()
            monkeypatch.setattr(sys, "stderr", stream)
            setup_logging("info", log_format, worker=2)
            logging.getLogger("flm_gateway.x").info("hello")
            lines[log_format] = stream.getvalue().strip()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert lines["text"].endswith(" flm_gateway.x[worker 2]: hello")
    assert json.loads(lines["json"])["worker"] == 2


# -- client text cannot forge or repaint the log -------------------------------

HOSTILE = (
    "/v1/\x1b[2J\x1b]0;owned\x07\r\n2026-01-01T00:00:00 ERROR   flm_gateway: forged\u202eevil\udcff"
)


def _raised(message: str) -> logging.LogRecord:
    try:
        raise ValueError(message)
    except ValueError:
        rec = record("refused %s", HOSTILE)
        rec.exc_info = sys.exc_info()
        return rec


def test_text_lines_escape_controls_and_indent_continuations() -> None:
    text = TextFormatter().format(_raised(HOSTILE))
    assert text.isascii() or all(c.isprintable() or c == "\n" for c in text)
    for char in ("\x1b", "\x07", "\r", "\u202e", "\udcff"):
        assert char not in text
    assert "\\x1b[2J" in text and "\\u202e" in text and "\\xff" in text
    first, *rest = text.split("\n")
    # the message is one line: the forged "record" stays inside it
    assert "refused /v1/\\x1b[2J" in first and first.endswith("forged\\u202eevil\\xff")
    assert "\\x0d\\x0a2026-01-01T00:00:00 ERROR" in first
    assert rest and all(line.startswith("    ") for line in rest)  # the traceback, indented
    # an exception message spanning lines stays inside the indented traceback
    assert any(line.startswith("    ValueError: /v1/\\x1b[2J") for line in rest)
    assert rest[-1] == "    2026-01-01T00:00:00 ERROR   flm_gateway: forged\\u202eevil\\xff"
    text.encode("utf-8")  # writable: no lone surrogate left


def test_json_lines_are_one_escaped_line() -> None:
    line = JsonFormatter().format(_raised(HOSTILE))
    assert "\n" not in line and line.isascii() and "\x1b" not in line
    payload = json.loads(line)
    for text in (payload["msg"], payload["exc"]):
        assert "\x1b" not in text and "\u202e" not in text and "\r" not in text
    assert payload["msg"].startswith("refused /v1/\\x1b[2J")
    assert "ValueError" in payload["exc"]
    extra = json.loads(JsonFormatter().format(record("x", model="m\x1b[31m\u202e")))
    assert extra["model"] == "m\\x1b[31m\\u202e"


def test_a_record_is_cut_at_max_record() -> None:
    huge = "m" * (MAX_RECORD * 4)
    assert len(TextFormatter().format(record("model %s", huge))) <= MAX_RECORD + 1
    payload = json.loads(JsonFormatter().format(record("model %s", huge)))
    assert len(payload["msg"]) <= MAX_RECORD + 1


# -- repeated records cannot flood the log -------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _failure(where: int = 0) -> logging.LogRecord:
    """An ERROR with a traceback, raised at one of two places, logged at one call site."""
    try:
        if where == 0:
            raise OSError(24, "Too many open files")
        raise KeyError("other place")
    except (OSError, KeyError):
        rec = logging.LogRecord(
            "mitmproxy.master", logging.ERROR, "master.py", 7, "Unhandled error in task.", (), None
        )
        rec.exc_info = sys.exc_info()
        return rec


def _messages(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records]


def test_identical_errors_are_limited_and_summarised() -> None:
    clock = Clock()
    limiter = RepeatLimiter(clock)
    shown = [r for _ in range(1000) for r in limiter.admit(_failure())]
    assert len(shown) == REPEAT_BURST
    assert shown[0].exc_info is not None  # the first in full
    assert all(r.exc_info is None and "OSError" in r.getMessage() for r in shown[1:])
    assert all("\n" not in TextFormatter().format(r) for r in shown[1:])  # one line each
    clock.now = REPEAT_WINDOW
    after = limiter.admit(_failure())
    assert _messages(after[:1]) == [
        f"990 similar message(s) suppressed in the last {int(REPEAT_WINDOW)}s: "
        "Unhandled error in task. [OSError: [Errno 24] Too many open files]"
    ]
    assert after[0].levelno == logging.ERROR and after[0].name == "mitmproxy.master"
    assert after[1].exc_info is not None  # a new window: in full again
    assert limiter.drain() == []  # nothing suppressed in the new window


def test_another_exception_or_place_is_another_kind() -> None:
    limiter = RepeatLimiter(Clock())
    for _ in range(50):
        limiter.admit(_failure(0))
    other = limiter.admit(_failure(1))
    assert len(other) == 1 and other[0].exc_info is not None


def test_messages_formatted_differently_share_the_call_site_budget() -> None:
    limiter = RepeatLimiter(Clock())
    shown = [
        r
        for n in range(1000)
        for r in limiter.admit(record(f"client {n} sent garbage"))  # an f-string template
    ]
    assert len(shown) == SITE_BURST
    summary = limiter.drain()
    assert _messages(summary) == [
        "900 similar message(s) suppressed in the last 1s: client 100 sent garbage"
    ]


def test_info_and_debug_are_never_limited() -> None:
    limiter = RepeatLimiter(Clock())
    access = logging.LogRecord("flm_gateway.access", logging.DEBUG, "a.py", 1, "%s", ("GET",), None)
    assert sum(len(limiter.admit(access)) for _ in range(500)) == 500


def test_forgotten_kinds_are_summarised_not_lost() -> None:
    limiter = RepeatLimiter(Clock(), burst=1, tracked=2)
    assert [len(limiter.admit(record(t, 1))) for t in ("a %s", "a %s", "b %s")] == [1, 0, 1]
    # A third kind makes the limiter forget the oldest, "a": its summary comes out first.
    assert _messages(limiter.admit(record("c %s", 1))) == [
        "1 similar message(s) suppressed in the last 1s: a 1",
        "c 1",
    ]


def test_handler_bounds_a_flood_and_summarises_at_close() -> None:
    stream = io.StringIO()
    handler = GatewayLogHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("flm_gateway.test.flood")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for _ in range(5000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.exception("accept failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = stream.getvalue().splitlines()
    records = [line for line in lines if not line.startswith(" ")]
    assert len(records) == REPEAT_BURST + 1
    assert records[-1].endswith(
        "4990 similar message(s) suppressed in the last 1s: accept failed [OSError: "
        "[Errno 24] Too many open files]"
    )
    assert len(stream.getvalue()) < 4000


def test_logger_names_operators_filter_on_do_not_follow_module_moves() -> None:
    """Log pipelines select records by logger name (docs/operations.md, security.md,
    egress.md): the audit records, tamper alerts included, reload, admin, metrics and
    usage keep the names they were documented with, wherever their modules live."""
    from flm_gateway.addons import audit, metrics_recorder, token_accounting
    from flm_gateway.app import hot_reload, operations_audit
    from flm_gateway.egress import dialer
    from flm_gateway.observability import admin_listener
    from flm_gateway.state import audit_watch

    names = {
        "operations_audit": operations_audit.log.name,
        "audit addon": audit.log.name,
        "audit_watch (tamper alerts)": audit_watch.log.name,
        "egress fallback audit": dialer.audit_log.name,
        "hot_reload": hot_reload.log.name,
        "admin_listener": admin_listener.log.name,
        "metrics_recorder": metrics_recorder.log.name,
        "token_accounting": token_accounting.log.name,
    }
    assert names == {
        "operations_audit": "flm_gateway.audit",
        "audit addon": "flm_gateway.audit",
        "audit_watch (tamper alerts)": "flm_gateway.audit",
        "egress fallback audit": "flm_gateway.audit",
        "hot_reload": "flm_gateway.reload",
        "admin_listener": "flm_gateway.admin",
        "metrics_recorder": "flm_gateway.metrics",
        "token_accounting": "flm_gateway.usage",
    }
