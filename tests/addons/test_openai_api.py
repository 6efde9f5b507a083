from __future__ import annotations

import json

import pytest

from flm_gateway.addons.canonical_target import CanonicalTarget
from flm_gateway.addons.listener_context import ListenerContext
from flm_gateway.addons.openai_api import OpenAIApi
from flm_gateway.proxy.flow_meta import API_FORM, API_KIND, API_MODEL, API_STREAM
from flm_gateway.proxy.runtime import Runtime
from tests.support.flows import RuntimeFactory, configure, error_of, make_flow


def _prepare(runtime: Runtime) -> tuple[ListenerContext, OpenAIApi]:
    context, api = ListenerContext(), OpenAIApi()
    configure(runtime, context)
    configure(runtime, api)
    return context, api


async def test_chat_body_is_parsed_into_metadata(make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime())
    flow = make_flow(body={"model": "tiny-a", "messages": [], "stream": True})
    context.requestheaders(flow)
    api.request(flow)
    assert flow.response is None
    assert API_KIND.require(flow) == "chat"
    assert API_MODEL.require(flow) == "tiny-a"
    assert API_STREAM.require(flow) is True


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{bad", "invalid_json"),
        (b"[1]", "invalid_json"),
        (b'{"messages": []}', "missing_model"),
        (b'{"model": ""}', "missing_model"),
        (b'{"model": 7}', "missing_model"),
    ],
)
async def test_bad_bodies_get_400(raw: bytes, code: str, make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime())
    flow = make_flow(raw=raw)
    context.requestheaders(flow)
    api.request(flow)
    status, error = error_of(flow)
    assert (status, error["code"], error["type"]) == (400, code, "invalid_request_error")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/./models",
        "//v1/models",
        "/V1/models",
        "/v1/chat/completions/",
        "/v2/models",
        "/v1/%63hat/completions",
        "/../v1/models",
    ],
)
async def test_paths_are_matched_exactly(path: str, make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime(healthy={"alpha": ["tiny-a"]}))
    flow = make_flow("GET", path)
    context.requestheaders(flow)
    api.request(flow)
    status, error = error_of(flow)
    assert (status, error["code"]) == (404, "unknown_url")


async def test_wrong_method_is_405(make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime())
    flow = make_flow("GET", "/v1/chat/completions")
    context.requestheaders(flow)
    api.request(flow)
    assert error_of(flow)[0] == 405


async def test_models_are_merged_each_once_with_owner_and_aliases(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(healthy={"alpha": ["tiny-a", "shared"], "beta": ["small-7b", "shared"]})
    context, api = _prepare(runtime)
    flow = make_flow("GET", "/v1/models")
    context.requestheaders(flow)
    api.request(flow)
    assert flow.response is not None and flow.response.status_code == 200
    data = json.loads(flow.response.content or b"")["data"]
    owners = {entry["id"]: entry["owned_by"] for entry in data}
    assert owners == {"tiny-a": "alpha", "shared": "alpha", "small-7b": "beta", "chat": "beta"}
    assert all(entry["object"] == "model" for entry in data)


async def test_unreachable_engines_are_left_out_of_models(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(healthy={"alpha": ["tiny-a"]})
    runtime.directory.get("beta").models = {}
    context, api = _prepare(runtime)
    flow = make_flow("GET", "/v1/models")
    context.requestheaders(flow)
    api.request(flow)
    ids = [entry["id"] for entry in json.loads(flow.response.content or b"")["data"]]  # type: ignore[union-attr]
    # beta's models are gone; the `chat` alias stays: its fallback (alpha) serves it
    assert ids == ["tiny-a", "chat"]


async def test_single_model_lookup(make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime(healthy={"alpha": ["tiny-a"]}))
    found, missing = make_flow("GET", "/v1/models/tiny-a"), make_flow("GET", "/v1/models/nope")
    for flow in (found, missing):
        context.requestheaders(flow)
        api.request(flow)
    assert json.loads(found.response.content or b"")["id"] == "tiny-a"  # type: ignore[union-attr]
    assert error_of(missing)[1]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "path",
    ["/v1/models/org/tiny:latest", "/v1/models/org/tiny%3Alatest", "/v1/models/%6Frg/tiny:latest"],
)
async def test_model_ids_are_decoded_as_an_engine_would(
    path: str, make_runtime: RuntimeFactory
) -> None:
    context, api = _prepare(make_runtime(healthy={"alpha": ["org/tiny:latest"]}))
    flow = make_flow("GET", path)
    context.requestheaders(flow)
    CanonicalTarget().requestheaders(flow)
    api.request(flow)
    assert json.loads(flow.response.content or b"")["id"] == "org/tiny:latest"  # type: ignore[union-attr]


async def test_transcription_model_comes_from_the_form_field(make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime())
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\nRIFF....\r\n--{boundary}--\r\n"
    ).encode()
    flow = make_flow(
        "POST",
        "/v1/audio/transcriptions",
        raw=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    context.requestheaders(flow)
    api.request(flow)
    assert flow.response is None
    assert API_MODEL.require(flow) == "whisper-1"


async def test_passthrough_listeners_are_left_alone(make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime())
    flow = make_flow("GET", "/api/tags", port=11435)
    context.requestheaders(flow)
    api.request(flow)
    assert flow.response is None and not API_KIND.is_set(flow)


async def test_checked_body_refusals_carry_param(make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime())
    for raw, code, param in (
        (b'{"model": "tiny-a", "Model": "x"}', "duplicate_key", "Model"),
        (b'{"model": "tiny-a", "stream": "yes"}', "invalid_type", "stream"),
        (b'{"MODEL": "tiny-a"}', "ambiguous_key", "MODEL"),
    ):
        flow = make_flow(raw=raw)
        context.requestheaders(flow)
        api.request(flow)
        status, error = error_of(flow)
        assert (status, error["code"], error["param"]) == (400, code, param)


async def test_null_known_fields_are_removed_from_what_is_sent(
    make_runtime: RuntimeFactory,
) -> None:
    context, api = _prepare(make_runtime())
    flow = make_flow(raw=b'{"model": "tiny-a", "max_tokens": null, "stream": null, "x": null}')
    context.requestheaders(flow)
    api.request(flow)
    assert flow.response is None
    assert json.loads(flow.request.content or b"") == {"model": "tiny-a", "x": None}
    assert API_STREAM.require(flow) is False


async def test_uploads_are_sent_in_canonical_form(make_runtime: RuntimeFactory) -> None:
    context, api = _prepare(make_runtime())
    body = (
        b'--q\r\ncontent-disposition: form-data;name="model"\r\n\r\nwhisper-1\r\n'
        b'--q\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n'
        b"--q--\r\n"
    )
    flow = make_flow(
        "POST",
        "/v1/audio/transcriptions",
        raw=body,
        headers={"content-type": 'multipart/form-data; boundary="q"'},
    )
    context.requestheaders(flow)
    api.request(flow)
    assert flow.response is None
    assert flow.request.headers["content-type"].startswith("multipart/form-data; boundary=flm-")
    assert b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1' in (
        flow.request.content or b""
    )
    assert [part.name for part in API_FORM.require(flow)] == ["model", "file"]
