"""Class 5: one reading of every body (and class 9: deep JSON, bounded echoes).

A key scoped to `ok-*` tries to make the engine serve another model, or more tokens,
than the gateway checked: JSON that Go's encoding/json (Ollama) reads differently
from Python's json, and uploads that python-multipart (FastAPI/starlette engines)
reads differently from the gateway. Each variant must get a 400 in OpenAI's shape
and reach no engine; what is allowed reaches it exactly as checked.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest

from flm_gateway.security.keys import hash_secret
from tests.adversarial.harness import (
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    request,
    sources,
)
from tests.support.multipart_reference import last_field, reference_parts
from tests.support.recording_engine import RecordingEngine

SCOPED = "flm-scoped-secret-for-body-parsing-tests-000000000"
OPEN = "flm-open-secret-for-body-parsing-tests-00000000000"
CONFIG = f"""\
server: {{state_dir: "{{state_dir}}"}}
listeners:
  - {{name: main, bind: "127.0.0.1:{{port}}", auth: api-key}}
engines:
  - {{name: rec, kind: ollama, url: "ENGINE_URL"}}
routes:
  - {{model: "ok-audio", engine: rec, upstream_model: whisper-large}}
  - {{model: "ok-*", engine: rec}}
  - {{model: "secret", engine: rec}}
security:
  request_limits: {{max_tokens: 100}}
  keys:
    - {{id: scoped, hash: "{hash_secret(SCOPED)}", scopes: {{models: ["ok-*"]}}}}
    - {{id: open, hash: "{hash_secret(OPEN)}"}}
"""
CHAT = "/v1/chat/completions"
TRANSCRIBE = "/v1/audio/transcriptions"
ADDRESSES = sources(51)


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingEngine]:
    with RecordingEngine(kind="ollama", models=("ok-1", "secret", "whisper-large")) as engine:
        yield engine


@pytest.fixture(scope="module")
def port(engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with gateway_before(engine, tmp_path_factory.mktemp("bodies"), CONFIG) as gateway:
        yield port_of(gateway)


def send(port: int, body: bytes, *, path: str = CHAT, key: str = SCOPED, **headers: str):  # type: ignore[no-untyped-def]
    pairs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    pairs.update({name.replace("_", "-"): value for name, value in headers.items()})
    return exchange(port, request("POST", path, headers=pairs, body=body), source=next(ADDRESSES))


def refused(port: int, engine: RecordingEngine, body: bytes, code: str, **headers: str) -> dict:  # type: ignore[type-arg]
    engine.clear()
    error = assert_openai_error(send(port, body, **headers), 400, code=code)
    assert engine.calls() == [], "a refused body reached the engine"
    return error


MESSAGES = '"messages": [{"role": "user", "content": "hi"}]'

# (body, code, param): JSON that two parsers read differently.
AMBIGUOUS_JSON = [
    # The payload: Go folds case and takes the last key.
    (
        b'{"model":"ok-1","Model":"secret","max_tokens":5,"Max_Tokens":999999}',
        "duplicate_key",
        "Model",
    ),
    (b'{"model":"ok-1","model":"secret"}', "duplicate_key", "model"),
    (b'{"model":"ok-1","MODEL":"secret"}', "duplicate_key", "MODEL"),
    # U+212A KELVIN SIGN folds to k, U+017F LONG S to s, U+0131 DOTLESS I to i in Go.
    ('{"model":"ok-1","max_tokens":5,"max_to\u212aens":999999}'.encode(), "duplicate_key", None),
    (b'{"model":"ok-1","max_tokens":5,"max_to\\u212aens":999999}', "duplicate_key", None),
    ('{"model":"ok-1","stream":false,"\u017ftream":true}'.encode(), "duplicate_key", None),
    ('{"model":"ok-1","max_complet\u0131on_tokens":999999}'.encode(), "ambiguous_key", None),
    ('{"model":"ok-1","\u017ftream":"yes"}'.encode(), "ambiguous_key", None),
    (
        '{"model":"ok-1","max_completion_tokens":5,"max_complet\u0131on_tokens":9}'.encode(),
        "duplicate_key",
        None,
    ),
    # A known field spelt in another case, alone: Go reads it, the gateway would not.
    (b'{"MODEL":"secret"}', "ambiguous_key", "MODEL"),
    (b'{"model":"ok-1","Max_Tokens":999999}', "ambiguous_key", "Max_Tokens"),
    (b'{"model":"ok-1","N":128}', "ambiguous_key", "N"),
    (
        b'{"model":"ok-1","stream":true,"stream_options":{"Include_Usage":false}}',
        "ambiguous_key",
        "stream_options.Include_Usage",
    ),
    # Nested objects fold too (Go decodes messages into structs).
    (
        b'{"model":"ok-1","messages":[{"role":"user","content":"a","Content":"b"}]}',
        "duplicate_key",
        "Content",
    ),
    (
        b'{"model":"ok-1","stream_options":{"include_usage":true,"include_usage":false}}',
        "duplicate_key",
        "include_usage",
    ),
    # Numbers Python reads and Go refuses (or reads differently).
    (b'{"model":"ok-1","temperature":NaN}', "invalid_number", None),
    (b'{"model":"ok-1","temperature":-Infinity}', "invalid_number", None),
    (b'{"model":"ok-1","temperature":1e400}', "invalid_number", None),
    (b'{"model":"ok-1","temperature":' + b"9" * 400 + b".0}", "invalid_number", None),
    # Encodings: Python's json.loads(bytes) detects UTF-16/32 and skips a BOM; Go does not.
    (b'\xef\xbb\xbf{"model":"ok-1"}', "invalid_encoding", None),
    ('{"model":"ok-1"}'.encode("utf-16"), "invalid_encoding", None),
    ('{"model":"ok-1"}'.encode("utf-16-le"), "invalid_encoding", None),
    ('{"model":"ok-1"}'.encode("utf-32"), "invalid_encoding", None),
    (b'{"model":"ok-1\xff"}', "invalid_encoding", None),
    (b'{"model":"ok-1\xed\xa0\x80"}', "invalid_encoding", None),
    # A lone surrogate escape: Python keeps it, Go reads U+FFFD.
    (b'{"model":"ok-1\\ud800"}', "invalid_json", None),
    (b'{"model":"ok-1","user":"\\udfff\\ud800"}', "invalid_json", None),
    # Trailing data: a second object some streaming parsers would read.
    (b'{"model":"ok-1"} {"model":"secret"}', "invalid_json", None),
    (b'{"model":"ok-1"}\n{"model":"secret"}', "invalid_json", None),
    (b'[{"model":"ok-1"}]', "invalid_json", None),
    (b"{'model':'ok-1'}", "invalid_json", None),
    (b'{"model":"ok-1",}', "invalid_json", None),
]


@pytest.mark.parametrize(("body", "code", "param"), AMBIGUOUS_JSON)
def test_json_two_parsers_could_read_differently_is_refused(
    port: int, engine: RecordingEngine, body: bytes, code: str, param: str | None
) -> None:
    error = refused(port, engine, body, code)
    if param is not None:
        assert error["param"] == param


def test_the_checked_body_is_what_reaches_the_engine(port: int, engine: RecordingEngine) -> None:
    body = f'{{"model":"ok-1",{MESSAGES},"max_tokens":5,"top_k":40}}'.encode()
    engine.clear()
    answer = send(port, body)
    assert answer.status == 200, answer.body
    (seen,) = engine.calls()
    assert seen.body == body  # unchanged: the client's own (now unambiguous) bytes
    assert (seen.go_field("model"), seen.go_field("max_tokens")) == ("ok-1", 5)


def test_a_changed_body_is_the_parsed_object_reserialised(
    port: int, engine: RecordingEngine
) -> None:
    body = f'{{"model":"ok-1",{MESSAGES},"max_tokens":null,"stream":null}}'.encode()
    engine.clear()
    assert send(port, body).status == 200
    (seen,) = engine.calls()
    assert json.loads(seen.body, object_pairs_hook=list) == [
        ("model", "ok-1"),
        ("messages", [[("role", "user"), ("content", "hi")]]),
        ("max_tokens", 100),
    ]


def test_an_undecodable_content_encoding_is_refused(port: int, engine: RecordingEngine) -> None:
    refused(port, engine, b'{"model":"secret"}', "invalid_encoding", Content_Encoding="gzip")
    engine.clear()
    packed = gzip.compress(f'{{"model":"ok-1",{MESSAGES}}}'.encode())
    assert send(port, packed, Content_Encoding="gzip").status == 200
    (seen,) = engine.calls()
    assert seen.header("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(seen.body))["model"] == "ok-1"


# ---- uploads ----------------------------------------------------------------

WAV = b"RIFF\x00\x00\x00\x00WAVEdata" + bytes(range(256)) * 8


def form(*parts: bytes, boundary: bytes = b"B0undary", end: bytes = b"--\r\n") -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + (
        b"--" + boundary + end
    )


def field(name: bytes, value: bytes, extra: bytes = b"") -> bytes:
    return b'Content-Disposition: form-data; name="' + name + b'"' + extra + b"\r\n\r\n" + value


FILE = (
    b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
    b"Content-Type: audio/wav\r\n\r\n" + WAV
)
MODEL = field(b"model", b"ok-audio")
FORM_TYPE = "multipart/form-data; boundary=B0undary"

# (body, content type, code): uploads python-multipart and the gateway could read apart.
AMBIGUOUS_UPLOADS = [
    (form(FILE, MODEL, field(b"model", b"secret")), FORM_TYPE, "duplicate_field"),
    (form(FILE, field(b"model", b"secret"), MODEL), FORM_TYPE, "duplicate_field"),
    (form(FILE, field(b"model", b"secret", b'; filename="m.txt"')), FORM_TYPE, "invalid_type"),
    (
        form(
            FILE,
            MODEL,
            b"Content-Disposition: form-data; name=\"x\"; name*=UTF-8''model\r\n\r\nsecret",
        ),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(FILE, b"Content-Disposition: form-data; name*=UTF-8''model\r\n\r\nsecret"),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(FILE, b"Content-Disposition: form-data; name=model\r\n\r\nsecret"),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(FILE, b'Content-Disposition: form-data; NAME="model"\r\n\r\nsecret'),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(FILE, b'Content-Disposition: form-data; name="model"; name="secret"\r\n\r\nx'),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(FILE, b'Content-Disposition: form-data; name="mo\\"del"\r\n\r\nsecret'),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (form(FILE, b"Content-Disposition: form-data\r\n\r\nsecret"), FORM_TYPE, "invalid_multipart"),
    (
        form(FILE, b'Content-Disposition: form-data; name=""\r\n\r\nsecret'),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(
            FILE,
            MODEL,
            b'Content-Disposition: form-data; name="language"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\nZW4=",
        ),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(
            FILE,
            b"Content-Type: multipart/mixed; boundary=C\r\n"
            b'Content-Disposition: form-data; name="model"\r\n\r\n--C\r\n\r\nsecret\r\n--C--',
        ),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(
            FILE,
            b'Content-Disposition: form-data; name="model"\r\n'
            b'Content-Disposition: form-data; name="x"\r\n\r\nok-audio',
        ),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(FILE, b'Content-Disposition: form-data;\r\n name="model"\r\n\r\nsecret'),
        FORM_TYPE,
        "invalid_multipart",
    ),
    # Framing: LF-only lines, a preamble part, a part after the end, padding, the boundary inside.
    (form(FILE, MODEL).replace(b"\r\n", b"\n"), FORM_TYPE, "invalid_multipart"),
    (
        b"--B0undary\n" + field(b"model", b"secret") + b"\r\n" + form(FILE, MODEL),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (b"preamble\r\n" + form(FILE, MODEL), FORM_TYPE, "invalid_multipart"),
    (
        form(FILE, MODEL)
        + b"--B0undary\r\n"
        + field(b"model", b"secret")
        + b"\r\n--B0undary--\r\n",
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(FILE, MODEL).replace(
            b'--B0undary\r\nContent-Disposition: form-data; name="model"',
            b'--B0undary \r\nContent-Disposition: form-data; name="model"',
        ),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (
        form(FILE, field(b"model", b"ok-audio\n--B0undary\r\n" + field(b"model", b"secret"))),
        FORM_TYPE,
        "invalid_multipart",
    ),
    (form(FILE, MODEL, end=b""), FORM_TYPE, "invalid_multipart"),
    # Content types: two boundaries, odd quoting, other parameters, not multipart.
    (
        form(FILE, MODEL),
        "multipart/form-data; boundary=B0undary; boundary=Other",
        "invalid_multipart",
    ),
    (form(FILE, MODEL), 'multipart/form-data; boundary="B0undary', "invalid_multipart"),
    (
        form(FILE, MODEL),
        "multipart/form-data; boundary=B0undary; charset=utf-8",
        "invalid_multipart",
    ),
    (form(FILE, MODEL), "multipart/form-data; boundary*=B0undary", "invalid_multipart"),
]


@pytest.mark.parametrize(("body", "content_type", "code"), AMBIGUOUS_UPLOADS)
def test_uploads_two_parsers_could_read_differently_are_refused(
    port: int, engine: RecordingEngine, body: bytes, content_type: str, code: str
) -> None:
    refused(port, engine, body, code, path=TRANSCRIBE, Content_Type=content_type)


def test_duplicate_model_parts_were_a_real_bypass() -> None:
    """Why duplicates are refused: mitmproxy's form takes the first, starlette the last."""
    body = form(FILE, MODEL, field(b"model", b"secret"))
    assert last_field(reference_parts(FORM_TYPE, body), "model") == b"secret"


@pytest.mark.parametrize(
    "content_types",
    [
        [FORM_TYPE, "multipart/form-data; boundary=Other"],
        ["multipart/mixed; boundary=B0undary"],
    ],
)
def test_uploads_of_another_or_an_ambiguous_type_are_refused(
    port: int, engine: RecordingEngine, content_types: list[str]
) -> None:
    """Refused by `content_type` before the body is read (415), or here (400)."""
    engine.clear()
    head = [("Authorization", f"Bearer {SCOPED}")]
    head += [("Content-Type", value) for value in content_types]
    body = form(FILE, MODEL)
    answer = exchange(port, request("POST", TRANSCRIBE, headers=head, body=body))
    assert answer.status in (400, 415), answer.status
    assert_openai_error(answer, answer.status)
    assert engine.calls() == []


def test_an_upload_reaches_the_engine_as_checked(port: int, engine: RecordingEngine) -> None:
    body = form(
        FILE,
        MODEL,
        field(b"timestamp_granularities[]", b"word"),
        field(b"timestamp_granularities[]", b"segment"),
    )
    engine.clear()
    answer = send(port, body, path=TRANSCRIBE, Content_Type=FORM_TYPE)
    assert answer.status == 200, answer.body
    (seen,) = engine.calls()
    # Re-serialised under a fresh boundary; python-multipart reads exactly the checked parts,
    # with the route's upstream model.
    assert "B0undary" not in (seen.header("content-type") or "")
    assert reference_parts(seen.header("content-type") or "", seen.body) == [
        ("file", "a.wav", WAV),
        ("model", None, b"whisper-large"),
        ("timestamp_granularities[]", None, b"word"),
        ("timestamp_granularities[]", None, b"segment"),
    ]


# ---- class 9: deep JSON, echoes -----------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"ok-1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model":"ok-1","x":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
        b'{"model":"ok-1","x":' + b"[" * 100_000,  # unterminated as well
        b'{"model":"ok-1","x":' + b"[" * 64 + b"]" * 64 + b"}",  # 65 levels
        b'{"model":"ok-1","messages":[{"role":"user","content":' + b"[" * 70 + b"]" * 70 + b"}]}",
    ],
)
def test_deep_json_is_a_clean_400(port: int, engine: RecordingEngine, body: bytes) -> None:
    refused(port, engine, body, "json_too_deep")


def test_64_levels_pass(port: int, engine: RecordingEngine) -> None:
    body = b'{"model":"ok-1","x":' + b"[" * 63 + b"]" * 63 + b"}"
    engine.clear()
    assert send(port, body).status == 200
    assert [seen.json for seen in engine.calls()] == [{**json.loads(body), "max_tokens": 100}]


def _assert_bounded_echo(error: dict) -> None:  # type: ignore[type-arg]
    message = error["message"]
    assert len(message) < 600, len(message)
    assert "…" in message
    assert "\x1b" not in message and "\r" not in message and "\n" not in message


def test_a_huge_model_name_is_echoed_truncated(port: int, engine: RecordingEngine) -> None:
    name = "\x1b[31m" + "m" * (10 << 20)  # 10 MB, starting with an ANSI escape
    body = json.dumps({"model": name, "messages": []}).encode()
    engine.clear()
    error = assert_openai_error(send(port, body, key=OPEN), 404, code="model_not_found")
    _assert_bounded_echo(error)
    assert "\\x1b[31m" in error["message"]
    error = assert_openai_error(send(port, body), 403, code="model_not_allowed")
    _assert_bounded_echo(error)
    assert engine.calls() == []


def test_long_paths_and_model_ids_are_echoed_truncated(port: int) -> None:
    headers = {"Authorization": f"Bearer {OPEN}"}
    for target, code in (
        ("/v1/models/" + "x" * 7000, "model_not_found"),
        ("/v2/" + "y" * 7000, "unknown_url"),  # under the 8 KiB target limit
    ):
        answer = exchange(port, request("GET", target, headers=headers), source=next(ADDRESSES))
        _assert_bounded_echo(assert_openai_error(answer, 404, code=code))


def test_an_upload_is_reserialised_even_when_nothing_changes(
    port: int, engine: RecordingEngine
) -> None:
    """Accepted spellings (quoted boundary, lowercase header, no space after ';') never
    reach the engine: it gets the canonical form of the parts read."""
    body = form(FILE, b'content-disposition: form-data;name="model"\r\n\r\nok-1')
    engine.clear()
    answer = send(
        port, body, path=TRANSCRIBE, Content_Type='multipart/form-data; boundary="B0undary"'
    )
    assert answer.status == 200, answer.body
    (seen,) = engine.calls()
    content_type = seen.header("content-type") or ""
    assert content_type.startswith("multipart/form-data; boundary=flm-")
    assert b"B0undary" not in seen.body and b"content-disposition" not in seen.body
    assert b'Content-Disposition: form-data; name="model"\r\n\r\nok-1\r\n' in seen.body
    assert reference_parts(content_type, seen.body) == [
        ("file", "a.wav", WAV),
        ("model", None, b"ok-1"),
    ]
