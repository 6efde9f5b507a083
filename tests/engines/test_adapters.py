"""Each adapter against its engine's real payloads (captured from llama-server 0c1e570 and
taken from the Ollama, vLLM and LM Studio API docs), through a scripted client."""

from __future__ import annotations

import pytest

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.engines.adapter import EngineUnavailable, HealthState, ModelInfo, Reply
from flm_gateway.engines.engine_check import check_engine
from flm_gateway.engines.registry import adapter_for
from tests.engines.scripted import ScriptedClient, down

# --- llama.cpp (payloads from the real llama-server) ---

LLAMA_MODELS = {
    "models": [{"name": "tiny", "model": "tiny", "type": "model"}],
    "object": "list",
    "data": [
        {
            "id": "tiny",
            "aliases": ["tiny"],
            "object": "model",
            "owned_by": "llamacpp",
            "meta": {"n_vocab": 407, "n_ctx": 512, "n_ctx_train": 2048},
        }
    ],
}
LLAMA_SLOTS = [
    {"id": 0, "n_ctx": 512, "is_processing": True},
    {"id": 1, "n_ctx": 512, "is_processing": False},
]
LLAMA_OK = {
    "/health": Reply(200, {"status": "ok"}),
    "/props": Reply(200, {"build_info": "b1-0c1e570", "total_slots": 2, "model_alias": "tiny"}),
    "/slots": Reply(200, LLAMA_SLOTS),
    "/v1/models": Reply(200, LLAMA_MODELS),
}


async def test_llamacpp_healthy_with_version_slots_and_context() -> None:
    report = await check_engine(adapter_for(EngineKind.LLAMACPP), ScriptedClient(LLAMA_OK))
    assert report.state is HealthState.HEALTHY
    assert report.version == "b1-0c1e570"
    assert report.detail == "1/2 slots busy"
    assert report.capacity == 2  # /props total_slots
    assert report.models == (ModelInfo("tiny", context_length=512, loaded=True),)


async def test_llamacpp_loading_model_is_degraded_with_its_message() -> None:
    loading = Reply(
        503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    )
    client = ScriptedClient({**LLAMA_OK, "/health": loading, "/v1/models": loading})
    report = await check_engine(adapter_for(EngineKind.LLAMACPP), client)
    assert (report.state, report.detail) == (HealthState.DEGRADED, "Loading model")


async def test_llamacpp_key_protected_props_do_not_change_health() -> None:
    denied = Reply(401, {"error": {"message": "Invalid API Key"}})
    client = ScriptedClient({**LLAMA_OK, "/props": denied, "/slots": denied})
    report = await adapter_for(EngineKind.LLAMACPP).check_health(client)
    assert report.state is HealthState.HEALTHY
    assert report.version is None and report.capacity is None


async def test_llamacpp_props_and_slots_are_read_independently() -> None:
    # A build without /props (or one that fails it) still shows its slots, and the other way.
    missing = Reply(404, {"error": {"message": "File Not Found"}})
    no_props = await adapter_for(EngineKind.LLAMACPP).check_health(
        ScriptedClient({**LLAMA_OK, "/props": missing})
    )
    assert (no_props.state, no_props.version, no_props.detail) == (
        HealthState.HEALTHY,
        None,
        "1/2 slots busy",
    )
    no_slots = await adapter_for(EngineKind.LLAMACPP).check_health(
        ScriptedClient({**LLAMA_OK, "/slots": missing})
    )
    assert (no_slots.version, no_slots.detail) == ("b1-0c1e570", "")


async def test_llamacpp_wrong_key_makes_model_list_fail_and_engine_degraded() -> None:
    denied = Reply(401, {"error": {"message": "Invalid API Key"}})
    client = ScriptedClient({**LLAMA_OK, "/v1/models": denied})
    report = await check_engine(adapter_for(EngineKind.LLAMACPP), client)
    assert report.state is HealthState.DEGRADED
    assert report.detail == "model list: GET /v1/models answered 401 (Invalid API Key)"


async def test_llamacpp_router_mode_status() -> None:
    payload = {
        "data": [
            {"id": "a", "status": {"value": "loaded"}},
            {"id": "b", "status": {"value": "unloaded"}},
        ]
    }
    client = ScriptedClient({"/v1/models": Reply(200, payload)})
    models = await adapter_for(EngineKind.LLAMACPP).list_models(client)
    assert [(m.id, m.loaded) for m in models] == [("a", True), ("b", False)]


# --- Ollama ---

OLLAMA_TAGS = {
    "models": [
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "size": 2019393189,
            "digest": "a80c4f17acd5",
            "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B"},
        },
        {"name": "nomic-embed-text:v1.5", "model": "nomic-embed-text:v1.5", "size": 1},
    ]
}
OLLAMA_PS = {
    "models": [
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "size": 3,
            "size_vram": 3,
            "expires_at": "2025-10-17T16:47:07.93355-07:00",
            "context_length": 4096,
        }
    ]
}
OLLAMA_OK = {
    "/api/version": Reply(200, {"version": "0.5.7"}),
    "/api/tags": Reply(200, OLLAMA_TAGS),
    "/api/ps": Reply(200, OLLAMA_PS),
}


async def test_ollama_models_loaded_state_context_and_latest_alias() -> None:
    report = await check_engine(adapter_for(EngineKind.OLLAMA), ScriptedClient(OLLAMA_OK))
    assert report.state is HealthState.HEALTHY
    assert report.version == "0.5.7"
    assert report.models == (
        ModelInfo("llama3.2:latest", 4096, True, aliases=("llama3.2",)),
        ModelInfo("nomic-embed-text:v1.5", None, False),
    )


async def test_ollama_without_ps_leaves_loaded_unknown() -> None:
    client = ScriptedClient({**OLLAMA_OK, "/api/ps": Reply(500, None)})
    models = await adapter_for(EngineKind.OLLAMA).list_models(client)
    assert [m.loaded for m in models] == [None, None]


async def test_ollama_with_no_pulled_model_is_degraded() -> None:
    client = ScriptedClient(
        {**OLLAMA_OK, "/api/tags": Reply(200, {"models": []}), "/api/ps": Reply(200, {})}
    )
    report = await check_engine(adapter_for(EngineKind.OLLAMA), client)
    assert (report.state, report.detail) == (HealthState.DEGRADED, "the engine lists no model")


async def test_ollama_declared_models_keep_an_empty_engine_healthy() -> None:
    client = ScriptedClient({**OLLAMA_OK, "/api/tags": Reply(200, {"models": []})})
    report = await check_engine(adapter_for(EngineKind.OLLAMA), client, declared=["x"])
    assert report.state is HealthState.HEALTHY


async def test_ollama_other_service_on_the_port_is_degraded() -> None:
    client = ScriptedClient({"/api/version": Reply(200, None)})
    report = await adapter_for(EngineKind.OLLAMA).check_health(client)
    assert report.state is HealthState.DEGRADED
    assert "is this Ollama" in report.detail


# --- vLLM ---

VLLM_MODELS = {
    "object": "list",
    "data": [
        {
            "id": "Qwen/Qwen2.5-1.5B-Instruct",
            "object": "model",
            "owned_by": "vllm",
            "root": "Qwen/Qwen2.5-1.5B-Instruct",
            "parent": None,
            "max_model_len": 32768,
        },
        {
            "id": "sql-lora",
            "object": "model",
            "owned_by": "vllm",
            "parent": "Qwen/Qwen2.5-1.5B-Instruct",
            "max_model_len": 32768,
        },
    ],
}


async def test_vllm_health_version_and_max_model_len() -> None:
    client = ScriptedClient(
        {
            "/health": Reply(200, None),
            "/version": Reply(200, {"version": "0.6.3.post1"}),
            "/v1/models": Reply(200, VLLM_MODELS),
        }
    )
    report = await check_engine(adapter_for(EngineKind.VLLM), client)
    assert (report.state, report.version) == (HealthState.HEALTHY, "0.6.3.post1")
    assert report.models == (
        ModelInfo("Qwen/Qwen2.5-1.5B-Instruct", 32768, True),
        ModelInfo("sql-lora", 32768, True),
    )


async def test_vllm_dead_engine_503_is_degraded() -> None:
    client = ScriptedClient({"/health": Reply(503, None)})
    report = await check_engine(adapter_for(EngineKind.VLLM), client)
    assert (report.state, report.detail) == (HealthState.DEGRADED, "GET /health answered 503")


# --- LM Studio ---

LMSTUDIO_V0 = {
    "object": "list",
    "data": [
        {
            "id": "qwen2-vl-7b-instruct",
            "object": "model",
            "type": "vlm",
            "state": "not-loaded",
            "max_context_length": 32768,
        },
        {
            "id": "meta-llama-3.1-8b-instruct",
            "object": "model",
            "type": "llm",
            "state": "loaded",
            "max_context_length": 131072,
            "loaded_context_length": 8192,
        },
        {
            "id": "text-embedding-nomic-embed-text-v1.5",
            "type": "embeddings",
            "state": "loaded",
            "max_context_length": 2048,
        },
    ],
}


async def test_lmstudio_loaded_state_and_context_lengths() -> None:
    client = ScriptedClient({"/api/v0/models": Reply(200, LMSTUDIO_V0)})
    report = await check_engine(adapter_for(EngineKind.LMSTUDIO), client)
    assert report.state is HealthState.HEALTHY
    assert report.models == (
        ModelInfo("qwen2-vl-7b-instruct", 32768, False),
        ModelInfo("meta-llama-3.1-8b-instruct", 8192, True),
        ModelInfo("text-embedding-nomic-embed-text-v1.5", 2048, True),
    )
    assert client.paths == ["/api/v0/models"]


@pytest.mark.parametrize(
    "rest_answer",
    [
        Reply(404, None),
        Reply(200, {"error": "Unexpected endpoint or method. (GET /api/v0/models)"}),
    ],
)
async def test_lmstudio_before_rest_api_falls_back_to_v1_models(rest_answer: Reply) -> None:
    client = ScriptedClient(
        {"/api/v0/models": rest_answer, "/v1/models": Reply(200, {"data": [{"id": "m"}]})}
    )
    report = await check_engine(adapter_for(EngineKind.LMSTUDIO), client)
    assert report.state is HealthState.HEALTHY
    assert report.models == (ModelInfo("m"),)


async def test_lmstudio_token_required_is_degraded() -> None:
    client = ScriptedClient({"/api/v0/models": Reply(401, {"error": "Unauthorized"})})
    report = await check_engine(adapter_for(EngineKind.LMSTUDIO), client)
    assert report.state is HealthState.DEGRADED
    assert report.detail == "GET /api/v0/models answered 401 (Unauthorized)"
    with pytest.raises(EngineUnavailable):
        await adapter_for(EngineKind.LMSTUDIO).list_models(client)


# --- generic OpenAI-compatible ---


async def test_openai_generic() -> None:
    adapter = adapter_for(EngineKind.OPENAI)
    client = ScriptedClient({"/v1/models": Reply(200, {"object": "list", "data": [{"id": "gpt"}]})})
    report = await check_engine(adapter, client)
    assert (report.state, report.models) == (HealthState.HEALTHY, (ModelInfo("gpt"),))
    empty = ScriptedClient({"/v1/models": Reply(200, {"data": []})})
    assert (await check_engine(adapter, empty)).state is HealthState.DEGRADED
    garbage = ScriptedClient({"/v1/models": Reply(200, {"hello": 1})})
    assert (await check_engine(adapter, garbage)).state is HealthState.DEGRADED
    assert adapter.stream_usage is False


@pytest.mark.parametrize("kind", list(EngineKind))
async def test_every_kind_unreachable_when_nothing_answers(kind: EngineKind) -> None:
    report = await check_engine(adapter_for(kind), down())
    assert report.state is HealthState.UNREACHABLE
    assert report.models is None


def test_registry_has_one_adapter_per_kind_with_detection_facts() -> None:
    facts = {
        kind: (adapter_for(kind).default_port, adapter_for(kind).program) for kind in EngineKind
    }
    assert facts == {
        EngineKind.OLLAMA: (11434, "ollama"),
        EngineKind.VLLM: (8000, "vllm"),
        EngineKind.LMSTUDIO: (1234, "lms"),
        EngineKind.LLAMACPP: (8080, "llama-server"),
        EngineKind.OPENAI: (None, None),
    }
    assert all(adapter_for(kind).kind is kind for kind in EngineKind)
