"""Each engine's admin routes and the lookup that finds them in a canonical path."""

from __future__ import annotations

import pytest

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.engines.admin_routes import READ_ONLY, AdminRoute, AdminRoutes
from flm_gateway.engines.registry import ADAPTERS, adapter_for

# (kind, method, path) that must be refused: every listed route, and spellings of it
ADMIN = [
    # Ollama: model store
    (EngineKind.OLLAMA, "POST", "/api/pull"),
    (EngineKind.OLLAMA, "POST", "/api/push"),
    (EngineKind.OLLAMA, "POST", "/api/create"),
    (EngineKind.OLLAMA, "POST", "/api/copy"),
    (EngineKind.OLLAMA, "DELETE", "/api/delete"),
    (EngineKind.OLLAMA, "POST", "/api/blobs/sha256:0123"),
    (EngineKind.OLLAMA, "HEAD", "/api/blobs/sha256:0123"),
    (EngineKind.OLLAMA, "POST", "/api/blobs"),
    # Ollama: the server's ollama.com account
    (EngineKind.OLLAMA, "POST", "/api/me"),
    (EngineKind.OLLAMA, "POST", "/api/signout"),
    (EngineKind.OLLAMA, "DELETE", "/api/user/keys/c3NoLWVkMjU1MTk"),
    (EngineKind.OLLAMA, "POST", "/api/experimental/web_search"),
    (EngineKind.OLLAMA, "POST", "/api/experimental/web_fetch"),
    # any method, case, trailing slash, below the route
    (EngineKind.OLLAMA, "GET", "/api/pull"),
    (EngineKind.OLLAMA, "PUT", "/api/pull"),
    (EngineKind.OLLAMA, "OPTIONS", "/api/pull"),
    (EngineKind.OLLAMA, "POST", "/API/PULL"),
    (EngineKind.OLLAMA, "POST", "/Api/Pull"),
    (EngineKind.OLLAMA, "POST", "/api/pull/"),
    (EngineKind.OLLAMA, "POST", "/api/pull/x"),
    (EngineKind.OLLAMA, "POST", "/api/Blobs/sha256:0123"),
    # llama.cpp
    (EngineKind.LLAMACPP, "POST", "/props"),
    (EngineKind.LLAMACPP, "PUT", "/props"),
    (EngineKind.LLAMACPP, "DELETE", "/props"),
    (EngineKind.LLAMACPP, "OPTIONS", "/props"),
    (EngineKind.LLAMACPP, "POST", "/PROPS/"),
    (EngineKind.LLAMACPP, "GET", "/slots"),
    (EngineKind.LLAMACPP, "POST", "/slots/0"),
    (EngineKind.LLAMACPP, "POST", "/slots/1/"),
    (EngineKind.LLAMACPP, "GET", "/lora-adapters"),
    (EngineKind.LLAMACPP, "POST", "/lora-adapters"),
    (EngineKind.LLAMACPP, "POST", "/models/load"),
    (EngineKind.LLAMACPP, "GET", "/models/load"),
    (EngineKind.LLAMACPP, "POST", "/models/unload"),
    (EngineKind.LLAMACPP, "POST", "/models"),
    (EngineKind.LLAMACPP, "DELETE", "/models"),
    (EngineKind.LLAMACPP, "GET", "/cors-proxy"),
    (EngineKind.LLAMACPP, "POST", "/tools"),
    # vLLM
    (EngineKind.VLLM, "POST", "/v1/load_lora_adapter"),
    (EngineKind.VLLM, "POST", "/v1/unload_lora_adapter"),
    (EngineKind.VLLM, "POST", "/reset_prefix_cache"),
    (EngineKind.VLLM, "POST", "/reset_mm_cache"),
    (EngineKind.VLLM, "POST", "/reset_encoder_cache"),
    (EngineKind.VLLM, "POST", "/sleep"),
    (EngineKind.VLLM, "POST", "/wake_up"),
    (EngineKind.VLLM, "GET", "/is_sleeping"),
    (EngineKind.VLLM, "POST", "/collective_rpc"),
    (EngineKind.VLLM, "GET", "/server_info"),
    (EngineKind.VLLM, "POST", "/pause"),
    (EngineKind.VLLM, "POST", "/resume"),
    (EngineKind.VLLM, "POST", "/scale_elastic_ep"),
    (EngineKind.VLLM, "POST", "/update_weights"),
    (EngineKind.VLLM, "POST", "/init_weight_transfer_engine"),
    (EngineKind.VLLM, "POST", "/abort_requests"),
    (EngineKind.VLLM, "POST", "/start_profile"),
    (EngineKind.VLLM, "POST", "/stop_profile"),
    (EngineKind.VLLM, "GET", "/tokenizer_info"),
    (EngineKind.VLLM, "POST", "/Sleep/"),
    # LM Studio
    (EngineKind.LMSTUDIO, "POST", "/api/v1/models/load"),
    (EngineKind.LMSTUDIO, "POST", "/api/v1/models/unload"),
    (EngineKind.LMSTUDIO, "POST", "/api/v1/models/download"),
    (EngineKind.LMSTUDIO, "GET", "/api/v1/models/download/status"),
    (EngineKind.LMSTUDIO, "POST", "/API/V1/Models/Load"),
]

# (kind, method, path) that stay open: the engines' ordinary API
ORDINARY = [
    (EngineKind.OLLAMA, "POST", "/api/chat"),
    (EngineKind.OLLAMA, "POST", "/api/generate"),
    (EngineKind.OLLAMA, "GET", "/api/tags"),
    (EngineKind.OLLAMA, "POST", "/api/show"),
    (EngineKind.OLLAMA, "GET", "/api/ps"),
    (EngineKind.OLLAMA, "GET", "/api/version"),
    (EngineKind.OLLAMA, "POST", "/api/embed"),
    (EngineKind.OLLAMA, "POST", "/api/pulled"),
    (EngineKind.OLLAMA, "POST", "/api/pul"),
    (EngineKind.OLLAMA, "POST", "/api/pull%20"),
    (EngineKind.OLLAMA, "POST", "/api/experimental/model-recommendations"),
    (EngineKind.OLLAMA, "POST", "/v1/chat/completions"),
    (EngineKind.OLLAMA, "GET", "/"),
    (EngineKind.LLAMACPP, "GET", "/props"),
    (EngineKind.LLAMACPP, "HEAD", "/props"),
    (EngineKind.LLAMACPP, "GET", "/props/"),
    (EngineKind.LLAMACPP, "GET", "/models"),
    (EngineKind.LLAMACPP, "GET", "/models/sse"),
    (EngineKind.LLAMACPP, "GET", "/health"),
    (EngineKind.LLAMACPP, "POST", "/completion"),
    (EngineKind.LLAMACPP, "POST", "/tokenize"),
    (EngineKind.LLAMACPP, "GET", "/slotsx"),
    (EngineKind.VLLM, "POST", "/v1/chat/completions"),
    (EngineKind.VLLM, "GET", "/health"),
    (EngineKind.VLLM, "GET", "/version"),
    (EngineKind.VLLM, "POST", "/tokenize"),
    (EngineKind.VLLM, "GET", "/metrics"),
    (EngineKind.VLLM, "POST", "/sleeping"),
    (EngineKind.LMSTUDIO, "GET", "/api/v1/models"),
    (EngineKind.LMSTUDIO, "POST", "/api/v1/chat"),
    (EngineKind.LMSTUDIO, "GET", "/api/v0/models"),
    (EngineKind.LMSTUDIO, "POST", "/api/v1/models/loader"),
    (EngineKind.OPENAI, "POST", "/api/pull"),
    (EngineKind.OPENAI, "POST", "/v1/chat/completions"),
]


@pytest.mark.parametrize(("kind", "method", "path"), ADMIN)
def test_admin_routes_are_found(kind: EngineKind, method: str, path: str) -> None:
    assert adapter_for(kind).admin_routes.match(method, path) is not None


@pytest.mark.parametrize(("kind", "method", "path"), ORDINARY)
def test_ordinary_routes_are_not(kind: EngineKind, method: str, path: str) -> None:
    assert adapter_for(kind).admin_routes.match(method, path) is None


@pytest.mark.parametrize("kind", [k for k in EngineKind if k is not EngineKind.OPENAI])
def test_every_engine_with_a_native_api_declares_its_admin_routes(kind: EngineKind) -> None:
    admin = adapter_for(kind).admin_routes
    assert admin.routes
    for route in admin.routes:
        assert route.what
        assert admin.match("PATCH", route.path) is route
        assert admin.match("PATCH", route.path.upper() + "/") is route
        assert route.open_methods <= READ_ONLY


def test_openai_kind_has_no_admin_api() -> None:
    assert ADAPTERS[EngineKind.OPENAI].admin_routes.routes == ()


def test_the_most_specific_route_decides() -> None:
    routes = AdminRoutes(
        [AdminRoute("/models", "list", READ_ONLY), AdminRoute("/models/load", "load")]
    )
    assert routes.match("GET", "/models") is None
    assert routes.match("GET", "/models/x") is None
    assert routes.match("POST", "/models/x") is not None
    load = routes.match("GET", "/models/load/now")
    assert load is not None and load.path == "/models/load"


@pytest.mark.parametrize("path", ["api/pull", "/api/Pull", "/api/pull/"])
def test_routes_are_declared_canonical(path: str) -> None:
    with pytest.raises(ValueError, match="lower case"):
        AdminRoute(path, "x")
