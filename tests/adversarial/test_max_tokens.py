"""Class 6: `max_tokens` caps that hold.

Caps: the listener's 200, the `capped` key's 80, and routes with defaults below,
above and beside the cap (`tuned`: llama.cpp's `n_predict` under `defaults.extra`).
Every dodge (null, -1, floats, strings, huge values, another token field,
`n`/`best_of`, route defaults) either gets a 400 naming the field and reaches no
engine, or reaches it with the one value the policy decides, as Go's encoding/json
(Ollama) reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from flm_gateway.security.keys import hash_secret
from tests.adversarial.harness import (
    Answer,
    assert_openai_error,
    exchange,
    gateway_before,
    port_of,
    request,
    sources,
)
from tests.support.recording_engine import RecordingEngine, Seen

PLAIN = "flm-plain-secret-for-max-tokens-tests-000000000000"
CAPPED = "flm-capped-secret-for-max-tokens-tests-00000000000"
CONFIG = f"""\
server: {{state_dir: "{{state_dir}}"}}
listeners:
  - {{name: main, bind: "127.0.0.1:{{port}}", auth: api-key}}
engines:
  - {{name: rec, kind: llamacpp, url: "ENGINE_URL"}}
routes:
  - {{model: small-default, engine: rec, upstream_model: tiny, defaults: {{max_tokens: 50}}}}
  - {{model: big-default, engine: rec, upstream_model: tiny, defaults: {{max_tokens: 5000}}}}
  - model: other-field-default
    engine: rec
    upstream_model: tiny
    defaults: {{max_completion_tokens: 5000}}
  - {{model: four-choices, engine: rec, upstream_model: tiny, defaults: {{n: 4}}}}
  - model: tuned
    engine: rec
    upstream_model: tiny
    defaults:
      temperature: 0.2
      logprobs: true
      extra: {{top_k: 40, mirostat: 2, samplers: [top_k, min_p], n_predict: 5000}}
  - {{model: tiny, engine: rec}}
security:
  request_limits: {{max_tokens: 200}}
  keys:
    - {{id: plain, hash: "{hash_secret(PLAIN)}"}}
    - {{id: capped, hash: "{hash_secret(CAPPED)}", limits: {{max_tokens: 80}}}}
"""
ADDRESSES = sources(52)
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def engine() -> Iterator[RecordingEngine]:
    with RecordingEngine(kind="llamacpp", models=("tiny",)) as engine:
        yield engine


@pytest.fixture(scope="module")
def port(engine: RecordingEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with gateway_before(engine, tmp_path_factory.mktemp("max_tokens"), CONFIG) as gateway:
        yield port_of(gateway)


def send(port: int, body: bytes, *, key: str = PLAIN, path: str = "/v1/chat/completions") -> Answer:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return exchange(port, request("POST", path, headers=headers, body=body), source=next(ADDRESSES))


def chat(**fields: Any) -> bytes:
    return json.dumps({"model": "tiny", "messages": MESSAGES, **fields}).encode()


def reached(port: int, engine: RecordingEngine, body: bytes, **kwargs: Any) -> Seen:
    engine.clear()
    answer = send(port, body, **kwargs)
    assert answer.status == 200, answer.body
    (seen,) = engine.calls()
    return seen


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": -1}, "max_tokens"),  # "infinite" to Ollama and llama.cpp
        ({"max_tokens": -100}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 100.0}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),  # an int to Python
        ({"max_tokens": [100]}, "max_tokens"),
        ({"max_tokens": {"value": 100}}, "max_tokens"),
        ({"max_tokens": 2**31}, "max_tokens"),  # wraps to negative in an int32
        ({"max_tokens": 2**32 - 1}, "max_tokens"),
        ({"max_tokens": 2**64}, "max_tokens"),
        ({"max_tokens": 201}, "max_tokens"),  # over the listener cap
        ({"max_completion_tokens": 999_999}, "max_completion_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"n_predict": -1}, "n_predict"),  # llama.cpp reads it before max_tokens
        ({"max_tokens": 10, "n_predict": -1}, "n_predict"),
        ({"max_tokens": 10, "n_predict": 5000}, "n_predict"),
        ({"max_tokens": 10, "max_completion_tokens": 5000}, "max_completion_tokens"),
        ({"max_tokens": 100, "n": 4}, "n"),  # 400 tokens in all
        ({"max_tokens": 2, "n": 128}, "n"),
        ({"n": 129}, "n"),
        ({"n": 0}, "n"),
        ({"n": -1}, "n"),
        ({"n": "4"}, "n"),
        ({"n": 1e2}, "n"),
    ],
)
def test_dodges_are_refused(
    port: int, engine: RecordingEngine, fields: dict[str, Any], param: str
) -> None:
    engine.clear()
    assert_openai_error(send(port, chat(**fields)), 400, param=param)
    assert engine.calls() == []


def test_raw_number_spellings_are_refused(port: int, engine: RecordingEngine) -> None:
    engine.clear()
    for raw in (b"1e2", b"1E+2", b"100.0", b"-0", b"1e400", b"NaN", b"Infinity", b"0x64"):
        body = b'{"model":"tiny","max_tokens":' + raw + b"}"
        answer = send(port, body)
        assert answer.status == 400, raw
        assert_openai_error(answer, 400)
    assert engine.calls() == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"max_tokens": 200}),
        ({"max_tokens": None}, {"max_tokens": 200}),  # null is absent
        ({"max_tokens": None, "max_completion_tokens": None}, {"max_tokens": 200}),
        ({"max_tokens": 150}, {"max_tokens": 150}),
        # Ollama reads only max_tokens: it is set beside the client's other field.
        ({"max_completion_tokens": 40}, {"max_tokens": 40, "max_completion_tokens": 40}),
        ({"n_predict": 40}, {"max_tokens": 40, "n_predict": 40}),
        ({"n": 4}, {"max_tokens": 50, "n": 4}),  # choices share the cap
        ({"n": 128}, {"max_tokens": 1, "n": 128}),
        ({"n": 2, "max_tokens": 100}, {"max_tokens": 100, "n": 2}),
    ],
)
def test_what_the_engine_receives(
    port: int, engine: RecordingEngine, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    seen = reached(port, engine, chat(**fields))
    for name in ("max_tokens", "max_completion_tokens", "n_predict", "n"):
        assert seen.go_field(name) == expected.get(name), name
    assert seen.json["max_tokens"] == expected["max_tokens"]


@pytest.mark.parametrize(
    ("model", "fields", "expected"),
    [
        # A route default below the listener cap is not overridden by it.
        ("small-default", {}, {"max_tokens": 50}),
        ("small-default", {"max_tokens": 120}, {"max_tokens": 120}),
        ("small-default", {"max_tokens": None}, {"max_tokens": 50}),
        # Above the cap, the cap.
        ("big-default", {}, {"max_tokens": 200}),
        # A default for another token field cannot outbid the client or the cap.
        ("other-field-default", {}, {"max_tokens": 200, "max_completion_tokens": 200}),
        ("other-field-default", {"max_tokens": 20}, {"max_tokens": 20}),
        # A route's n counts against the cap too.
        ("four-choices", {}, {"max_tokens": 50, "n": 4}),
    ],
)
def test_route_defaults_are_decided_before_the_cap(
    port: int,
    engine: RecordingEngine,
    model: str,
    fields: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    body = json.dumps({"model": model, "messages": MESSAGES, **fields}).encode()
    seen = reached(port, engine, body)
    assert seen.go_field("model") == "tiny"
    for name in ("max_tokens", "max_completion_tokens", "n"):
        assert seen.go_field(name) == expected.get(name), name


def test_route_extra_defaults_reach_the_engine_with_their_tokens_capped(
    port: int, engine: RecordingEngine
) -> None:
    tuned = {"model": "tuned", "messages": MESSAGES}
    seen = reached(port, engine, json.dumps({**tuned, "top_k": 5}).encode())
    assert seen.json == {
        **tuned,
        "model": "tiny",
        "top_k": 5,  # the client's value stands
        "temperature": 0.2,
        "logprobs": True,
        "mirostat": 2,
        "samplers": ["top_k", "min_p"],
        "n_predict": 200,  # llama.cpp reads it first: the cap holds it too
        "max_tokens": 200,
    }
    # logprobs is a count on /v1/completions: the chat-only default is not sent there.
    completion = {"model": "tuned", "prompt": "hi"}
    seen = reached(port, engine, json.dumps(completion).encode(), path="/v1/completions")
    assert seen.json == {
        **completion,
        "model": "tiny",
        "temperature": 0.2,
        "top_k": 40,
        "mirostat": 2,
        "samplers": ["top_k", "min_p"],
        "n_predict": 200,
        "max_tokens": 200,
    }


def test_a_route_n_refuses_a_client_value_it_would_multiply(
    port: int, engine: RecordingEngine
) -> None:
    body = json.dumps({"model": "four-choices", "messages": MESSAGES, "max_tokens": 100}).encode()
    engine.clear()
    assert_openai_error(send(port, body), 400, code="max_tokens_exceeded", param="n")
    assert engine.calls() == []


def test_the_key_cap_is_the_smallest(port: int, engine: RecordingEngine) -> None:
    assert reached(port, engine, chat(), key=CAPPED).go_field("max_tokens") == 80
    assert reached(port, engine, chat(max_tokens=None), key=CAPPED).go_field("max_tokens") == 80
    body = json.dumps({"model": "small-default", "messages": MESSAGES}).encode()
    assert reached(port, engine, body, key=CAPPED).go_field("max_tokens") == 50
    engine.clear()
    error = assert_openai_error(send(port, chat(max_tokens=81), key=CAPPED), 400)
    assert (error["code"], error["param"]) == ("max_tokens_exceeded", "max_tokens")
    assert engine.calls() == []


def test_completions_count_best_of(port: int, engine: RecordingEngine) -> None:
    path = "/v1/completions"
    body = json.dumps({"model": "tiny", "prompt": "hi", "best_of": 4, "max_tokens": 60}).encode()
    engine.clear()
    assert_openai_error(send(port, body, path=path), 400, param="best_of")
    assert engine.calls() == []
    body = json.dumps({"model": "tiny", "prompt": "hi", "best_of": 4}).encode()
    assert reached(port, engine, body, path=path).go_field("max_tokens") == 50


def test_streamed_requests_are_capped_too(port: int, engine: RecordingEngine) -> None:
    seen = reached(port, engine, chat(stream=True, max_tokens=None))
    assert (seen.go_field("stream"), seen.go_field("max_tokens")) == (True, 200)
