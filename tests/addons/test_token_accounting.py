"""Token accounting per engine kind, streamed and not, with mitmproxy's taddons/tflow (no sockets).

Stream bodies are the engines' real wire formats: llama.cpp's captured from llama-server
0c1e570; vLLM's, Ollama's and LM Studio's as their OpenAI layers send them (usage-only chunk
with `choices: []` before `[DONE]`); Ollama's native NDJSON with `prompt_eval_count`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from flm_gateway.accounting.usage import StreamMeter
from flm_gateway.addons.streaming import Streaming
from flm_gateway.addons.token_accounting import TokenAccounting
from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.engines.registry import adapter_for
from flm_gateway.proxy.flow_meta import USAGE

LLAMACPP_STREAM = (
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant",'
    b'"content":null}}],"created":1795319963,"id":"chatcmpl-sNGr","model":"tiny",'
    b'"system_fingerprint":"b1-0c1e570","object":"chat.completion.chunk"}\n\n'
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" n"}}],'
    b'"created":1795319963,"id":"chatcmpl-sNGr","model":"tiny","object":"chat.completion.chunk"}\n\n'
    b'data: {"choices":[{"finish_reason":null,"index":0,"delta":{"content":" world"}}],'
    b'"created":1795319963,"id":"chatcmpl-sNGr","model":"tiny","object":"chat.completion.chunk"}\n\n'
    b'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"created":1795319963,'
    b'"id":"chatcmpl-sNGr","model":"tiny","object":"chat.completion.chunk"}\n\n'
)
LLAMACPP_USAGE = (
    b'data: {"choices":[],"created":1795319963,"id":"chatcmpl-sNGr","model":"tiny",'
    b'"object":"chat.completion.chunk","usage":{"completion_tokens":5,"prompt_tokens":20,'
    b'"total_tokens":25,"prompt_tokens_details":{"cached_tokens":0}},"timings":{"prompt_n":20,'
    b'"predicted_n":5}}\n\n'
)
DONE = b"data: [DONE]\n\n"


def openai_stream(fingerprint: str, texts: list[str]) -> bytes:
    """An OpenAI-layer chat stream as vLLM, Ollama (/v1) and LM Studio send it."""
    events = [{"role": "assistant", "content": ""}] + [{"content": t} for t in texts]
    out = b""
    for index, delta in enumerate(events):
        chunk = {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "m",
            "system_fingerprint": fingerprint,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": "stop" if index == len(events) - 1 else None,
                }
            ],
        }
        out += b"data: " + json.dumps(chunk).encode() + b"\n\n"
    return out


def usage_chunk(prompt: int, completion: int) -> bytes:
    chunk = {
        "id": "chatcmpl-7",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


# (kind, body without usage, usage chunk, expected (prompt, completion))
STREAMS = [
    (EngineKind.LLAMACPP, LLAMACPP_STREAM, LLAMACPP_USAGE, (20, 5)),
    (EngineKind.VLLM, openai_stream("", ["Hello", " there"]), usage_chunk(12, 3), (12, 3)),
    (EngineKind.OLLAMA, openai_stream("fp_ollama", ["Hi"]), usage_chunk(26, 2), (26, 2)),
    (EngineKind.LMSTUDIO, openai_stream("qwen3-4b", ["Yo", "!"]), usage_chunk(9, 4), (9, 4)),
]

CHAT_BODY: dict[str, Any] = {
    "model": "m",
    "stream": True,
    "messages": [{"role": "user", "content": "x" * 40}],
}


def accounting(kind: EngineKind) -> TokenAccounting:
    """The addon, with engine "e" of `kind` in its runtime."""
    addon = TokenAccounting()
    state = SimpleNamespace(adapter=adapter_for(kind))
    addon.commit(SimpleNamespace(engines={"e": state}))  # type: ignore[arg-type]
    return addon


def routed_flow(
    body: dict[str, Any], kind: str = "chat", path: str = "/v1/chat/completions"
) -> http.HTTPFlow:
    flow = tflow.tflow(
        req=tutils.treq(method=b"POST", path=path.encode(), content=json.dumps(body).encode())
    )
    flow.metadata.update(
        {
            "flm.route.engine": "e",
            "flm.api.kind": kind,
            "flm.api.body": body,
            "flm.api.stream": bool(body.get("stream")),
            "flm.api.model": body.get("model"),
        }
    )
    return flow


def requested(addon: TokenAccounting, body: dict[str, Any] = CHAT_BODY) -> http.HTTPFlow:
    """A routed chat flow (a copy of `body`) after the addon's request hook."""
    flow = routed_flow(dict(body))
    addon.request(flow)
    return flow


def respond(
    flow: http.HTTPFlow, content_type: str, content: bytes = b"", status: int = 200
) -> None:
    flow.response = http.Response.make(status, content, {"content-type": content_type})
    if not content:
        del flow.response.headers["content-length"]
        flow.response.headers["transfer-encoding"] = "chunked"


def split(data: bytes, seed: int) -> Iterator[bytes]:
    """`data` in random pieces (1-40 bytes), as a network would cut it."""
    rng = random.Random(seed)
    index = 0
    while index < len(data):
        step = rng.randint(1, 40)
        yield data[index : index + step]
        index += step


def run_stream(addon: TokenAccounting, flow: http.HTTPFlow, wire: bytes, seed: int = 1) -> bytes:
    """Drive the hooks as mitmproxy does for a streamed response; returns what the client got."""
    Streaming().responseheaders(flow)
    addon.responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    sent: list[bytes] = []
    for piece in split(wire, seed):
        out = stream(piece)
        assert isinstance(out, list)
        sent.extend(out)
    sent.extend(stream(b""))
    assert all(sent), "an empty chunk would end a chunked body early"
    addon.response(flow)
    return b"".join(sent)


@pytest.mark.parametrize(
    ("kind", "wire", "usage", "expected"), STREAMS, ids=lambda v: getattr(v, "value", None)
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_usage_is_requested_counted_and_stripped(
    kind: EngineKind, wire: bytes, usage: bytes, expected: tuple[int, int], seed: int
) -> None:
    addon = accounting(kind)
    with taddons.context(addon):
        flow = requested(addon)
        sent_body = json.loads(flow.request.content or b"")
        assert sent_body["stream_options"] == {"include_usage": True}
        respond(flow, "text/event-stream")
        got = run_stream(addon, flow, wire + usage + DONE, seed)
    assert got == wire + DONE
    assert USAGE.require(flow) == {
        "prompt_tokens": expected[0],
        "completion_tokens": expected[1],
        "estimated": False,
    }


@pytest.mark.parametrize(
    ("kind", "wire", "usage", "expected"), STREAMS, ids=lambda v: getattr(v, "value", None)
)
def test_client_that_asked_for_usage_gets_it_unchanged(
    kind: EngineKind, wire: bytes, usage: bytes, expected: tuple[int, int]
) -> None:
    addon = accounting(kind)
    body = {**CHAT_BODY, "stream_options": {"include_usage": True}}
    with taddons.context(addon):
        flow = routed_flow(body)
        original = flow.request.content
        addon.request(flow)
        assert flow.request.content == original
        respond(flow, "text/event-stream")
        got = run_stream(addon, flow, wire + usage + DONE)
    assert got == wire + usage + DONE
    assert USAGE.require(flow)["estimated"] is False


def test_events_pass_at_once_and_only_an_incomplete_event_waits() -> None:
    meter = StreamMeter("sse", strip_usage_chunk=True)
    first, second = LLAMACPP_STREAM.split(b"\n\n")[:2]
    assert meter(first + b"\n\n" + second[:10]) == [first + b"\n\n"]
    assert meter(second[10:] + b"\n\n") == [second + b"\n\n"]
    assert meter(LLAMACPP_USAGE) == []
    assert meter(DONE) == [DONE]
    assert meter(b"") == []
    assert meter.reported == (20, 5)


def test_without_stripping_chunks_go_out_as_they_came() -> None:
    meter = StreamMeter("sse")
    pieces = list(split(LLAMACPP_STREAM + LLAMACPP_USAGE + DONE, 7))
    assert [meter(p) for p in pieces] == [[p] for p in pieces]
    assert meter(b"") == []


MIXED_EVENTS = [
    *[event + b"\n\n" for event in LLAMACPP_STREAM.split(b"\n\n")[:-1]],
    b": a comment line\n\n",
    b'event: delta\nid: 7\ndata: {"choices":[{"delta":{"content":"two "}}]}\n\n',
    b'data: {"choices":[{"delta":\ndata: {"content":"split"}}]}\n\n',  # two data lines
    b'data:{"choices":[{"delta":{"content":"no space"}}]}\n\n',
    b"data: not json\n\n",
    LLAMACPP_USAGE,
    DONE,
]


@pytest.mark.parametrize("strip", [True, False])
def test_one_event_per_chunk_counts_as_the_same_bytes_in_pieces(strip: bool) -> None:
    # Engines flush one event per chunk (the meter's shortcut); a network may cut them
    # anywhere (the general scan). Both must pass and count the same.
    whole, pieces = StreamMeter("sse", strip), StreamMeter("sse", strip)
    out_whole = [part for event in MIXED_EVENTS for part in whole(event)] + whole(b"")
    wire = b"".join(MIXED_EVENTS)
    out_pieces = [part for piece in split(wire, 5) for part in pieces(piece)] + pieces(b"")
    assert b"".join(out_whole) == b"".join(out_pieces)
    assert (whole.reported, whole.chars) == (pieces.reported, pieces.chars) == ((20, 5), 25)
    expected = wire.replace(LLAMACPP_USAGE, b"") if strip else wire
    assert b"".join(out_whole) == expected


def test_crlf_separated_events() -> None:
    meter = StreamMeter("sse", strip_usage_chunk=True)
    wire = (LLAMACPP_STREAM + LLAMACPP_USAGE + DONE).replace(b"\n\n", b"\r\n\r\n")
    out = b"".join(meter(wire) + meter(b""))
    assert out == (LLAMACPP_STREAM + DONE).replace(b"\n\n", b"\r\n\r\n")
    assert meter.reported == (20, 5)


def test_generic_openai_engine_is_not_asked_and_stream_is_estimated() -> None:
    addon = accounting(EngineKind.OPENAI)
    wire = openai_stream("", ["a" * 10, "b" * 10]) + DONE
    with taddons.context(addon):
        flow = routed_flow(dict(CHAT_BODY))
        original = flow.request.content
        addon.request(flow)
        assert flow.request.content == original
        respond(flow, "text/event-stream")
        got = run_stream(addon, flow, wire)
    assert got == wire
    # prompt: 40 chars -> 10 tokens + 4 per message; completion: 20 chars -> 5 tokens
    assert USAGE.require(flow) == {
        "prompt_tokens": 14,
        "completion_tokens": 5,
        "estimated": True,
    }


def test_stripping_replaces_content_length_by_chunked() -> None:
    addon = accounting(EngineKind.VLLM)
    with taddons.context(addon):
        flow = requested(addon)
        respond(flow, "text/event-stream")
        flow.response.headers["content-length"] = "999"
        del flow.response.headers["transfer-encoding"]
        Streaming().responseheaders(flow)
        addon.responseheaders(flow)
    assert "content-length" not in flow.response.headers
    assert flow.response.headers["transfer-encoding"] == "chunked"


def test_stream_cut_by_engine_error_is_estimated_from_what_passed() -> None:
    addon = accounting(EngineKind.LLAMACPP)
    error = (
        b'data: {"error":{"code":500,"message":"Context size has been exceeded.",'
        b'"type":"server_error"}}\n\n'
    )
    with taddons.context(addon):
        flow = requested(addon)
        respond(flow, "text/event-stream")
        got = run_stream(addon, flow, LLAMACPP_STREAM + error)
    assert got == LLAMACPP_STREAM + error
    # " n" + " world" = 8 chars -> 2 tokens
    assert USAGE.require(flow) == {
        "prompt_tokens": 14,
        "completion_tokens": 2,
        "estimated": True,
    }


def test_client_disconnect_records_partial_usage() -> None:
    addon = accounting(EngineKind.VLLM)
    with taddons.context(addon):
        flow = requested(addon)
        respond(flow, "text/event-stream")
        Streaming().responseheaders(flow)
        addon.responseheaders(flow)
        assert callable(flow.response.stream)
        flow.response.stream(openai_stream("", ["abcdefgh"]))
        addon.error(flow)
    assert USAGE.require(flow) == {
        "prompt_tokens": 14,
        "completion_tokens": 2,
        "estimated": True,
    }


@pytest.mark.parametrize(
    "kind",
    [
        EngineKind.LLAMACPP,
        EngineKind.VLLM,
        EngineKind.OLLAMA,
        EngineKind.LMSTUDIO,
        EngineKind.OPENAI,
    ],
)
def test_json_response_usage(kind: EngineKind) -> None:
    addon = accounting(kind)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }
    with taddons.context(addon):
        flow = routed_flow(body)
        addon.request(flow)
        assert flow.request.content == json.dumps(body).encode()
        respond(flow, "application/json", json.dumps(answer).encode())
        addon.responseheaders(flow)
        addon.response(flow)
    assert USAGE.require(flow) == {
        "prompt_tokens": 11,
        "completion_tokens": 2,
        "estimated": False,
    }


def test_json_response_without_usage_is_estimated() -> None:
    addon = accounting(EngineKind.OPENAI)
    body = {"model": "m", "prompt": "p" * 8}
    answer = {"choices": [{"index": 0, "text": "t" * 12}]}
    with taddons.context(addon):
        flow = routed_flow(body, kind="completions", path="/v1/completions")
        respond(flow, "application/json", json.dumps(answer).encode())
        addon.response(flow)
    assert USAGE.require(flow) == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "estimated": True,
    }


def test_embeddings_count_prompt_tokens_only() -> None:
    addon = accounting(EngineKind.LLAMACPP)
    body = {"model": "tiny", "input": ["hello world", "again"]}
    answer = {
        "object": "list",
        "usage": {"prompt_tokens": 10, "total_tokens": 10},
        "data": [{"embedding": [0.1], "index": 0}],
    }
    with taddons.context(addon):
        flow = routed_flow(body, kind="embeddings", path="/v1/embeddings")
        respond(flow, "application/json", json.dumps(answer).encode())
        addon.response(flow)
        assert USAGE.require(flow) == {
            "prompt_tokens": 10,
            "completion_tokens": 0,
            "estimated": False,
        }
        flow = routed_flow(
            {"model": "tiny", "input": [[1, 2, 3], [4, 5]]},
            kind="embeddings",
            path="/v1/embeddings",
        )
        respond(flow, "application/json", b'{"data": []}')
        addon.response(flow)
        assert USAGE.require(flow) == {
            "prompt_tokens": 5,
            "completion_tokens": 0,
            "estimated": True,
        }


def test_engine_error_counts_zero() -> None:
    addon = accounting(EngineKind.LLAMACPP)
    with taddons.context(addon):
        flow = routed_flow({"model": "m", "messages": [{"role": "user", "content": "x" * 9000}]})
        respond(
            flow,
            "application/json",
            b'{"error":{"code":400,"type":"exceed_context_size_error"}}',
            400,
        )
        addon.response(flow)
    assert USAGE.require(flow) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "estimated": False,
    }


OLLAMA_NATIVE_CHAT = b"".join(
    json.dumps(obj).encode() + b"\n"
    for obj in [
        {
            "model": "llama3.2",
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": "The"},
            "done": False,
        },
        {
            "model": "llama3.2",
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": " sky"},
            "done": False,
        },
        {
            "model": "llama3.2",
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 4883583458,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 342546000,
            "eval_count": 282,
            "eval_duration": 4535599000,
        },
    ]
)


def passthrough_flow(path: str, body: dict[str, Any]) -> http.HTTPFlow:
    flow = tflow.tflow(
        req=tutils.treq(method=b"POST", path=path.encode(), content=json.dumps(body).encode())
    )
    flow.metadata.update({"flm.route.engine": "e", "flm.api.kind": "passthrough"})
    return flow


@pytest.mark.parametrize("seed", [1, 5])
def test_ollama_native_ndjson_stream_on_passthrough(seed: int) -> None:
    addon = accounting(EngineKind.OLLAMA)
    with taddons.context(addon):
        flow = passthrough_flow(
            "/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "why?"}]}
        )
        original = flow.request.content
        addon.request(flow)
        assert flow.request.content == original
        respond(flow, "application/x-ndjson")
        got = run_stream(addon, flow, OLLAMA_NATIVE_CHAT, seed)
    assert got == OLLAMA_NATIVE_CHAT
    assert USAGE.require(flow) == {
        "prompt_tokens": 26,
        "completion_tokens": 282,
        "estimated": False,
    }


def test_ollama_native_json_generate_and_embed() -> None:
    addon = accounting(EngineKind.OLLAMA)
    with taddons.context(addon):
        flow = passthrough_flow(
            "/api/generate", {"model": "llama3.2", "prompt": "Why?", "stream": False}
        )
        answer = {
            "model": "llama3.2",
            "response": "Because.",
            "done": True,
            "prompt_eval_count": 7,
            "eval_count": 3,
        }
        respond(flow, "application/json; charset=utf-8", json.dumps(answer).encode())
        addon.response(flow)
        assert USAGE.require(flow) == {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "estimated": False,
        }
        flow = passthrough_flow("/api/embed", {"model": "all-minilm", "input": "Why?"})
        answer = {"model": "all-minilm", "embeddings": [[0.1]], "prompt_eval_count": 8}
        respond(flow, "application/json", json.dumps(answer).encode())
        addon.response(flow)
        assert USAGE.require(flow) == {
            "prompt_tokens": 8,
            "completion_tokens": 0,
            "estimated": False,
        }


def test_llamacpp_native_completion_stream() -> None:
    addon = accounting(EngineKind.LLAMACPP)
    wire = (
        b'data: {"index":0,"content":"ab","stop":false}\n\n'
        b'data: {"index":0,"content":"","stop":true,"tokens_evaluated":6,"tokens_predicted":2}\n\n'
    )
    with taddons.context(addon):
        flow = passthrough_flow("/completion", {"prompt": "hello", "stream": True})
        respond(flow, "text/event-stream")
        assert run_stream(addon, flow, wire) == wire
    assert USAGE.require(flow) == {
        "prompt_tokens": 6,
        "completion_tokens": 2,
        "estimated": False,
    }


def test_passthrough_get_counts_zero_estimated() -> None:
    addon = TokenAccounting()
    with taddons.context(addon):
        flow = tflow.tflow(req=tutils.treq(method=b"GET", path=b"/api/tags", content=b""))
        flow.metadata.update({"flm.route.engine": "e", "flm.api.kind": "passthrough"})
        respond(flow, "application/json", b'{"models": []}')
        addon.response(flow)
    assert USAGE.require(flow)["prompt_tokens"] == 0
    assert USAGE.require(flow)["completion_tokens"] == 0


def test_buffered_stream_after_fallback_is_counted_and_stripped() -> None:
    addon = accounting(EngineKind.VLLM)
    wire = openai_stream("", ["Hello"]) + usage_chunk(5, 1) + DONE
    with taddons.context(addon):
        flow = requested(addon)
        respond(flow, "text/event-stream", wire)
        addon.response(flow)
    assert flow.response.content == openai_stream("", ["Hello"]) + DONE
    assert USAGE.require(flow) == {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "estimated": False,
    }


def test_unrouted_flows_are_ignored() -> None:
    addon = TokenAccounting()
    with taddons.context(addon):
        flow = tflow.tflow(resp=True)
        addon.request(flow)
        addon.responseheaders(flow)
        addon.response(flow)
    assert not USAGE.is_set(flow)


def test_oversized_event_stops_parsing_but_passes_through() -> None:
    meter = StreamMeter("sse", strip_usage_chunk=True)
    huge = b"data: " + b"x" * (1024 * 1024 + 10)
    out = meter(huge) + meter(b"\n\n" + DONE) + meter(b"")
    assert b"".join(out) == huge + b"\n\n" + DONE
    assert meter.gave_up
