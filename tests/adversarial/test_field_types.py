"""Class 7: the types of the known fields, per endpoint.

A wrong type for a field the gateway knows gets 400 with `param` naming the field
(`messages[0].role`) and reaches no engine; a coercion that would change meaning is
a wrong type (`"yes"` is not true, `"5"` is not 5, `true` is not 1). Unknown fields
are engine extensions and pass unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    request,
    sources,
)
from tests.support.multipart_reference import reference_parts
from tests.support.recording_engine import RecordingEngine

CONFIG = """\
server: {state_dir: "{state_dir}"}
listeners:
  - {name: main, bind: "127.0.0.1:{port}", auth: none}
engines:
  - {name: rec, kind: vllm, url: "ENGINE_URL"}
routes:
  - {model: "tiny", engine: rec}
"""
ADDRESSES = sources(53)
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingEngine]:
    with RecordingEngine(kind="vllm", models=("tiny",)) as engine:
        yield engine


@pytest.fixture(scope="module")
def port(engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with gateway_before(engine, tmp_path_factory.mktemp("types"), CONFIG) as gateway:
        yield port_of(gateway)


def send(port: int, path: str, body: bytes, content_type: str = "application/json") -> Answer:
    headers = {"Content-Type": content_type}
    return exchange(port, request("POST", path, headers=headers, body=body), source=next(ADDRESSES))


CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"

WRONG_TYPES = [
    (CHAT, {"messages": "hi"}, "messages"),
    (CHAT, {"messages": {"role": "user"}}, "messages"),
    (CHAT, {"messages": ["hi"]}, "messages[0]"),
    (CHAT, {"messages": [{"role": 1, "content": "x"}]}, "messages[0].role"),
    (CHAT, {"messages": [{"content": "x"}]}, "messages[0].role"),
    (CHAT, {"messages": [*MESSAGES, {"role": "user", "content": 5}]}, "messages[1].content"),
    (CHAT, {"messages": [{"role": "user", "content": [{"type": 1}]}]}, "messages[0].content"),
    (CHAT, {"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content"),
    (CHAT, {"messages": [{"role": "user", "content": "x", "name": ["a"]}]}, "messages[0].name"),
    (CHAT, {"max_tokens": [100]}, "max_tokens"),
    (CHAT, {"stream": "yes"}, "stream"),
    (CHAT, {"stream": "true"}, "stream"),
    (CHAT, {"stream": 1}, "stream"),
    (CHAT, {"stream": [True]}, "stream"),
    (CHAT, {"stream": True, "stream_options": "yes"}, "stream_options"),
    (CHAT, {"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options"),
    (CHAT, {"temperature": "0.5"}, "temperature"),
    (CHAT, {"temperature": True}, "temperature"),
    (CHAT, {"top_p": [1]}, "top_p"),
    (CHAT, {"stop": 5}, "stop"),
    (CHAT, {"stop": ["a", 5]}, "stop"),
    (CHAT, {"seed": "42"}, "seed"),
    (CHAT, {"seed": 2**64}, "seed"),
    (CHAT, {"user": 5}, "user"),
    (CHAT, {"logit_bias": {"50256": "ban"}}, "logit_bias"),
    (CHAT, {"tools": "all"}, "tools"),
    (CHAT, {"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0].function"),
    (CHAT, {"response_format": "json"}, "response_format"),
    (CHAT, {"logprobs": 1}, "logprobs"),
    (COMPLETIONS, {"prompt": {"text": "x"}}, "prompt"),
    (COMPLETIONS, {"prompt": ["a", 1]}, "prompt"),
    (COMPLETIONS, {"echo": "no"}, "echo"),
    (COMPLETIONS, {"best_of": "2"}, "best_of"),
    (COMPLETIONS, {"suffix": 1}, "suffix"),
    (EMBEDDINGS, {"input": 5}, "input"),
    (EMBEDDINGS, {"input": [1.5]}, "input"),
    (EMBEDDINGS, {"input": [[1, "a"]]}, "input"),
    (EMBEDDINGS, {"input": "x", "dimensions": "8"}, "dimensions"),
    (EMBEDDINGS, {"input": "x", "encoding_format": 1}, "encoding_format"),
]


@pytest.mark.parametrize(("path", "fields", "param"), WRONG_TYPES)
def test_wrong_types_get_400_naming_the_field(
    port: int, engine: RecordingEngine, path: str, fields: dict[str, Any], param: str
) -> None:
    body = json.dumps({"model": "tiny", **fields}).encode()
    engine.clear()
    error = assert_openai_error(send(port, path, body), 400)
    assert error["param"] is not None and error["param"].startswith(param), error
    assert error["code"] in ("invalid_type", "invalid_value", "missing_field"), error
    assert engine.calls() == []


@pytest.mark.parametrize("model", [None, "", 5, ["tiny"], {"name": "tiny"}, True])
def test_model_must_be_a_non_empty_string(port: int, engine: RecordingEngine, model: Any) -> None:
    engine.clear()
    body = json.dumps({"model": model, "messages": MESSAGES}).encode()
    assert_openai_error(send(port, CHAT, body), 400, code="missing_model", param="model")
    assert engine.calls() == []


def test_stream_true_streams_and_false_does_not(port: int, engine: RecordingEngine) -> None:
    streamed = send(port, CHAT, json.dumps({"model": "tiny", "stream": True}).encode())
    assert (streamed.header("content-type") or "").startswith("text/event-stream")
    plain = send(port, CHAT, json.dumps({"model": "tiny", "stream": False}).encode())
    assert (plain.header("content-type") or "").startswith("application/json")


def test_extensions_and_valid_shapes_pass_unchanged(port: int, engine: RecordingEngine) -> None:
    bodies = [
        (CHAT, {"messages": MESSAGES, "top_k": 40, "mirostat": 2, "options": {"x": [1]}}),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}),
        (CHAT, {"messages": MESSAGES, "temperature": 1, "stop": ["a"], "seed": -1}),
        (CHAT, {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}),
        (COMPLETIONS, {"prompt": [[1, 2], [3]], "echo": False, "logprobs": 2}),
        (EMBEDDINGS, {"input": ["a", "b"], "dimensions": 8, "encoding_format": "float"}),
    ]
    for path, fields in bodies:
        body = json.dumps({"model": "tiny", **fields}).encode()
        engine.clear()
        assert send(port, path, body).status == 200, fields
        assert [seen.body for seen in engine.calls()] == [body]


# ---- upload fields --------------------------------------------------------------


def upload(*fields: tuple[str, str, bytes]) -> tuple[bytes, str]:
    """A form with a file part and `(name, filename or "", value)` parts."""
    parts = [("file", "a.wav", b"RIFF...."), *fields]
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--X\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + b"--X--\r\n", "multipart/form-data; boundary=X"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ([("model", "", b"tiny"), ("temperature", "", b"hot")], "temperature"),
        ([("model", "", b"tiny"), ("temperature", "", b"nan")], "temperature"),
        ([("model", "", b"tiny"), ("stream", "", b"yes")], "stream"),
        ([("model", "", b"tiny"), ("stream", "", b"1")], "stream"),
        ([("model", "m.txt", b"tiny")], "model"),
        ([("model", "", b"tiny"), ("language", "l.txt", b"en")], "language"),
        ([("model", "", b"tiny\xff")], "model"),
    ],
)
def test_upload_fields_are_typed(
    port: int, engine: RecordingEngine, fields: list[tuple[str, str, bytes]], param: str
) -> None:
    body, content_type = upload(*fields)
    engine.clear()
    error = assert_openai_error(send(port, "/v1/audio/transcriptions", body, content_type), 400)
    assert error["param"] == param, error
    assert engine.calls() == []


def test_file_must_be_a_file_part(port: int, engine: RecordingEngine) -> None:
    body = b'--X\r\nContent-Disposition: form-data; name="model"\r\n\r\ntiny\r\n'
    body += b'--X\r\nContent-Disposition: form-data; name="file"\r\n\r\nRIFF\r\n--X--\r\n'
    engine.clear()
    answer = send(port, "/v1/audio/transcriptions", body, "multipart/form-data; boundary=X")
    assert_openai_error(answer, 400, param="file")
    assert engine.calls() == []


def test_valid_upload_fields_pass(port: int, engine: RecordingEngine) -> None:
    body, content_type = upload(
        ("model", "", b"tiny"), ("temperature", "", b"0.2"), ("stream", "", b"false")
    )
    engine.clear()
    assert send(port, "/v1/audio/transcriptions", body, content_type).status == 200
    (seen,) = engine.calls()
    parts = reference_parts(seen.header("content-type") or "", seen.body)
    assert [(name, data) for name, _, data in parts] == [
        ("file", b"RIFF...."),
        ("model", b"tiny"),
        ("temperature", b"0.2"),
        ("stream", b"false"),
    ]
