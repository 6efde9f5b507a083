"""The client's model name in answers and streams; the engine and upstream model in headers."""

from __future__ import annotations

import json

import pytest
from mitmproxy import http

from flm_gateway.accounting.stream_filters import find_filter
from flm_gateway.accounting.usage import StreamMeter
from flm_gateway.addons.model_alias import MAX_LINE, AliasFilter, ModelAlias, rewrite
from flm_gateway.config.listener_settings import ListenerConfig
from tests.ops_flows import routed_flow

DROPIN = ListenerConfig.model_validate(
    {"name": "dropin", "bind": "127.0.0.1:11435", "passthrough": "e1"}
)
CHUNK = b'data: {"id":"c1","object":"chat.completion.chunk","model":"tiny","choices":[]}\n\n'


def aliased_flow(
    body: bytes = b'{"model": "tiny", "choices": []}', **metadata: object
) -> http.HTTPFlow:
    return routed_flow(model="chat", body=body, flm__route__upstream_model="tiny", **metadata)


def test_a_json_answer_names_the_alias_and_the_headers_name_the_engine() -> None:
    flow = aliased_flow()
    addon = ModelAlias()
    addon.responseheaders(flow)
    addon.response(flow)
    assert flow.response is not None
    assert json.loads(flow.response.content or b"")["model"] == "chat"
    assert flow.response.headers["x-flm-engine"] == "e1"
    assert flow.response.headers["x-flm-upstream-model"] == "tiny"


def test_every_stream_chunk_names_the_alias_as_it_passes() -> None:
    flow = aliased_flow(body=b"")
    assert flow.response is not None
    flow.response.headers["content-length"] = "999"
    flow.response.stream = True
    ModelAlias().responseheaders(flow)
    stream = flow.response.stream
    assert isinstance(stream, AliasFilter)
    assert "content-length" not in flow.response.headers
    assert flow.response.headers["transfer-encoding"] == "chunked"
    # Each complete event leaves in the call that completed it.
    assert b"".join(stream(CHUNK)) == CHUNK.replace(b'"tiny"', b'"chat"')
    half = len(CHUNK) // 2
    assert stream(CHUNK[:half]) == []  # an incomplete line waits (no newline yet)...
    first = b"".join(stream(CHUNK[half:]))  # ...and leaves with the rest of its event
    assert first == CHUNK.replace(b'"tiny"', b'"chat"')
    assert stream(b"data: [DONE]") == []
    assert stream(b"") == [b"data: [DONE]"]  # the end of the body flushes the last line


def test_the_filter_wraps_the_token_meter_which_is_still_found() -> None:
    flow = aliased_flow(body=b"")
    assert flow.response is not None
    meter = StreamMeter("sse")
    flow.response.stream = meter
    ModelAlias().responseheaders(flow)
    assert find_filter(flow.response.stream, StreamMeter) is meter
    assert callable(flow.response.stream)
    assert b"".join(flow.response.stream(CHUNK)) == CHUNK.replace(b'"tiny"', b'"chat"')
    assert meter.chars == 0 and meter.reported is None  # the meter saw the event


def test_a_line_longer_than_the_limit_passes_through() -> None:
    stream = AliasFilter("chat")
    huge = b'"model":"tiny"' + b"x" * MAX_LINE
    assert stream(huge) == [huge]
    assert stream(CHUNK) == [CHUNK]  # given up for the rest of the stream


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"model":"tiny"}', b'{"model":"chat"}'),
        (b'{"model" : "models/tiny.gguf"}', b'{"model":"chat"}'),
        (b'{"model":"a\\"b"}', b'{"model":"chat"}'),
        # Client text cannot forge a member: quotes inside strings are escaped.
        (b'{"content":"say \\"model\\":\\"tiny\\""}', b'{"content":"say \\"model\\":\\"tiny\\""}'),
        (b'{"models":"tiny"}', b'{"models":"tiny"}'),
    ],
)
def test_rewrite_touches_only_model_members(data: bytes, expected: bytes) -> None:
    assert rewrite(data, b'"model":"chat"') == expected


def test_an_alias_needing_json_escapes_is_escaped() -> None:
    flow = aliased_flow(flm__api__model='we"ird\\')
    ModelAlias().response(flow)
    assert flow.response is not None
    assert json.loads(flow.response.content or b"")["model"] == 'we"ird\\'


def test_passthrough_errors_and_other_kinds_are_left_alone() -> None:
    body = b'{"model": "tiny"}'
    for flow in (
        aliased_flow(body, flm__listener=DROPIN),
        aliased_flow(body, flm__api__kind="transcriptions"),
        routed_flow(model="chat", status=400, body=body),
        routed_flow(model="chat", engine=None, body=body),
    ):
        addon = ModelAlias()
        addon.responseheaders(flow)
        addon.response(flow)
        assert flow.response is not None and flow.response.content == body
        assert "x-flm-engine" not in flow.response.headers


def test_an_engine_echoing_the_client_name_is_not_scanned_after_its_first_chunk() -> None:
    flow = routed_flow(model="tiny", body=b"", flm__route__upstream_model="tiny")
    assert flow.response is not None
    flow.response.stream = True
    ModelAlias().responseheaders(flow)
    stream = flow.response.stream
    assert isinstance(stream, AliasFilter) and stream.echo_expected
    assert stream(b": keep-alive\n\n") == [b": keep-alive\n\n"]  # names no model: undecided
    assert not stream.gave_up
    assert stream(CHUNK) == [CHUNK]  # names "tiny", the client's own name: settled
    assert stream.gave_up
    renamed = CHUNK.replace(b'"tiny"', b'"other"')
    assert stream(renamed) == [renamed]  # not scanned any more


def test_an_engine_answering_another_name_is_rewritten_throughout() -> None:
    flow = routed_flow(model="tiny", body=b"", flm__route__upstream_model="tiny")
    assert flow.response is not None
    flow.response.stream = True
    ModelAlias().responseheaders(flow)
    stream = flow.response.stream
    assert callable(stream)
    path_named = CHUNK.replace(b'"tiny"', b'"models/tiny.gguf"')  # llama.cpp's file name
    for _ in range(3):
        assert b"".join(stream(path_named)) == CHUNK
    assert isinstance(stream, AliasFilter) and not stream.gave_up


def test_an_aliased_route_is_rewritten_even_when_the_engine_echoes() -> None:
    flow = aliased_flow(body=b"")  # the client asked "chat", the engine was asked "tiny"
    assert flow.response is not None
    flow.response.stream = True
    ModelAlias().responseheaders(flow)
    stream = flow.response.stream
    assert isinstance(stream, AliasFilter) and not stream.echo_expected
    echoed = CHUNK.replace(b'"tiny"', b'"chat"')
    assert stream(echoed) == [echoed] and not stream.gave_up
