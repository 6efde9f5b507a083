from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from flm_gateway.logs import JsonFormatter, TextFormatter, redact, setup_logging

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
