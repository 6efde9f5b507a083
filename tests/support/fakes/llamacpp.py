"""A fake llama.cpp `llama-server`.

Paths and shapes from llama.cpp's tools/server/README.md and server sources
(https://github.com/ggml-org/llama.cpp/tree/master/tools/server):
- GET /health and /v1/health: 503 {"error": {"code": 503, "message": "Loading model",
  "type": "unavailable_error"}} while loading (every other path answers the same), then
  200 {"status": "ok"}.
- GET /props: default_generation_settings (with n_ctx), total_slots, model_path,
  model_alias, chat_template, modalities, build_info, is_sleeping.
- GET /slots: one object per slot (id, id_task, n_ctx, is_processing, params, next_token).
- GET /v1/models, /models and /api/tags: an OpenAI `data` list (owned_by "llamacpp",
  `meta`) and an Ollama-style `models` list, in one body.
- One model per server: any `model` name is accepted and echoed back.
- Streams: a first chunk with {"role": "assistant", "content": null}, a separate finish
  chunk with an empty delta; include_usage is honoured (last chunk `choices: []` with
  usage and `timings`); system_fingerprint is the build; errors mid-stream are
  `data: {"error": {...}}` and end the stream.
- Errors: {"error": {"code", "message", "type"}}; unknown paths 404 "File Not Found";
  with --api-key, 401 "Invalid API Key", /health and the model lists stay public.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web

from tests.support.fakes.generate import new_id
from tests.support.fakes.openai_like import JSONDict, OpenAIKind, sse

BUILD_INFO = "b6500-fake0000"
N_CTX = 4096
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


class LlamaCppKind(OpenAIKind):
    name: ClassVar[str] = "llamacpp"
    default_models: ClassVar[tuple[str, ...]] = ("gemma-3-1b-it-Q4_K_M.gguf",)
    health_paths: ClassVar[frozenset[str]] = frozenset({"/health", "/v1/health"})
    public_paths: ClassVar[frozenset[str]] = frozenset(
        {"/health", "/v1/health", "/models", "/v1/models", "/api/tags"}
    )
    response_headers: ClassVar[Mapping[str, str]] = {"Server": "llama.cpp"}
    owned_by: ClassVar[str] = "llamacpp"

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.get("/models", self.list_models),
            web.get("/api/tags", self.list_models),
            web.get("/health", self.health),
            web.get("/v1/health", self.health),
            web.get("/props", self.props),
            web.get("/slots", self.slots),
        ]

    def requires_key(self, path: str) -> bool:
        return path not in self.public_paths

    def resolve_model(self, name: Any) -> str | None:
        if isinstance(name, str) and name:
            return name
        return self.state.models[0] if self.state.models else "model"

    def models_body(self) -> JSONDict:
        return {
            "models": [
                {
                    "name": m,
                    "model": m,
                    "modified_at": "",
                    "size": "",
                    "digest": "",
                    "type": "model",
                    "description": "",
                    "tags": [""],
                    "capabilities": ["completion"],
                    "parameters": "",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": [""],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
                for m in self.state.models
            ],
            "object": "list",
            "data": [
                {
                    "id": m,
                    "object": "model",
                    "created": self.state.created,
                    "owned_by": "llamacpp",
                    "meta": {
                        "vocab_type": 2,
                        "n_vocab": 262144,
                        "n_ctx_train": 32768,
                        "n_embd": 1152,
                        "n_params": 999885952,
                        "size": 806058496,
                    },
                }
                for m in self.state.models
            ],
        }

    def completion_id(self, chat: bool) -> str:
        return new_id("chatcmpl-" if chat else "cmpl-", 24)

    def envelope_extra(self, model: str) -> JSONDict:
        return {"system_fingerprint": BUILD_INFO}

    def choice_extra(self) -> JSONDict:
        return {}

    def message_extra(self) -> JSONDict:
        return {}

    def role_delta(self) -> JSONDict | None:
        return {"role": "assistant", "content": None}

    def null_usage_on_chunks(self) -> bool:
        return False

    def usage_extra(self, usage: JSONDict) -> JSONDict:
        prompt, predicted = usage["prompt_tokens"], usage["completion_tokens"]
        return {
            "timings": {
                "cache_n": 0,
                "prompt_n": prompt,
                "prompt_ms": 1.0 * prompt,
                "prompt_per_token_ms": 1.0,
                "prompt_per_second": 1000.0,
                "predicted_n": predicted,
                "predicted_ms": 2.0 * predicted,
                "predicted_per_token_ms": 2.0,
                "predicted_per_second": 500.0,
            }
        }

    def error_body(self, status: int, message: str) -> JSONDict:
        kind = ERROR_TYPES.get(status, "server_error")
        return {"error": {"code": status, "message": message, "type": kind}}

    def stream_error(self, message: str) -> bytes:
        return sse(self.error_body(500, message))

    def unknown_path(self, request: web.Request) -> web.StreamResponse:
        return self.error_response(404, "File Not Found")

    def unauthorized(self) -> web.Response:
        return self.error_response(401, "Invalid API Key")

    def unhealthy(self) -> web.Response:
        return self.error_response(503, "Service Unavailable")

    def loading(self) -> web.Response:
        return self.error_response(503, "Loading model")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def slot(self, index: int) -> JSONDict:
        return {
            "id": index,
            "id_task": -1,
            "n_ctx": N_CTX // self.state.slots,
            "speculative": False,
            "is_processing": index < self.state.in_flight - 1,
            "params": {
                "n_predict": -1,
                "seed": 4294967295,
                "temperature": 0.8,
                "top_k": 40,
                "top_p": 0.95,
                "min_p": 0.05,
                "max_tokens": -1,
                "stream": True,
            },
            "prompt": "",
            "next_token": {
                "has_next_token": True,
                "has_new_line": False,
                "n_remain": -1,
                "n_decoded": 0,
                "stopping_word": "",
            },
        }

    async def props(self, request: web.Request) -> web.Response:
        model = self.state.models[0] if self.state.models else ""
        return web.json_response(
            {
                "default_generation_settings": {
                    **self.slot(0),
                    "n_ctx": N_CTX,
                    "is_processing": False,
                },
                "total_slots": self.state.slots,
                "model_alias": model,
                "model_path": f"/models/{model}",
                "chat_template": "{{ messages }}",
                "chat_template_caps": {},
                "modalities": {"vision": False, "audio": False},
                "build_info": BUILD_INFO,
                "is_sleeping": False,
            }
        )

    async def slots(self, request: web.Request) -> web.Response:
        # `in_flight` counts this request too, hence the `- 1` in slot().
        return web.json_response([self.slot(i) for i in range(self.state.slots)])
