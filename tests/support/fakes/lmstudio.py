"""A fake LM Studio server (`lms server start`, an Express app on port 1234).

Paths and shapes from https://lmstudio.ai/docs/app/api/endpoints/rest (REST API v0)
and https://lmstudio.ai/docs/app/api/endpoints/openai, plus its bug tracker:
- GET /v1/models: {"data": [{"id", "object": "model", "owned_by": "organization_owner"}],
  "object": "list"}, every downloaded model, loaded or not.
- GET /api/v0/models and /api/v0/models/{id}: id, object, type ("llm" | "embeddings"),
  publisher, arch, compatibility_type, quantization, state ("loaded" | "not-loaded"),
  max_context_length. The first model starts loaded; a request for another loads it
  just in time (its state turns "loaded").
- POST /api/v0/chat/completions, /api/v0/completions, /api/v0/embeddings: the OpenAI
  answers plus `stats`, `model_info` and `runtime` when not streaming.
- Streams ignore stream_options.include_usage (lmstudio-bug-tracker#713, open); chunks
  carry system_fingerprint = the model id and delta {"role": "assistant", "content"}.
- Unknown paths and methods answer **200** {"error": "Unexpected endpoint or method.
  (GET /x)"} (lmstudio-bug-tracker#618, #1323), with X-Powered-By: Express.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from aiohttp import web

from tests.support.fakes.generate import new_id
from tests.support.fakes.openai_like import JSONDict, OpenAIKind
from tests.support.fakes.state import EngineState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_embedding(model: str) -> bool:
    return "embed" in model


class LMStudioKind(OpenAIKind):
    name: ClassVar[str] = "lmstudio"
    default_models: ClassVar[tuple[str, ...]] = (
        "qwen2.5-7b-instruct",
        "text-embedding-nomic-embed-text-v1.5",
    )
    include_usage: ClassVar[bool] = False
    health_paths: ClassVar[frozenset[str]] = frozenset({"/v1/models", "/api/v0/models"})
    response_headers: ClassVar[Mapping[str, str]] = {"X-Powered-By": "Express"}
    owned_by: ClassVar[str] = "organization_owner"
    max_context_length: ClassVar[int] = 32768

    def __init__(self, state: EngineState) -> None:
        super().__init__(state)
        self.loaded: set[str] = set(state.models[:1])

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.get("/api/v0/models", self.v0_models),
            web.get("/api/v0/models/{model:.+}", self.v0_model),
            web.post("/api/v0/chat/completions", self.v0(self.chat_completions)),
            web.post("/api/v0/completions", self.v0(self.completions)),
            web.post("/api/v0/embeddings", self.v0(self.embeddings)),
        ]

    def resolve_model(self, name: Any) -> str | None:
        model = super().resolve_model(name)
        if model is not None:
            self.loaded.add(model)  # just-in-time loading
        return model

    def v0_entry(self, model: str) -> JSONDict:
        embed = is_embedding(model)
        return {
            "id": model,
            "object": "model",
            "type": "embeddings" if embed else "llm",
            "publisher": "lmstudio-community",
            "arch": "nomic-bert" if embed else "qwen2",
            "compatibility_type": "gguf",
            "quantization": "F16" if embed else "Q4_K_M",
            "state": "loaded" if model in self.loaded else "not-loaded",
            "max_context_length": 2048 if embed else self.max_context_length,
        }

    def completion_id(self, chat: bool) -> str:
        return new_id("chatcmpl-" if chat else "cmpl-", 20)

    def envelope_extra(self, model: str) -> JSONDict:
        return {"system_fingerprint": model}

    def message_extra(self) -> JSONDict:
        return {}

    def role_delta(self) -> JSONDict | None:
        return None

    def piece_delta(self, piece: str) -> JSONDict:
        return {"role": "assistant", "content": piece}

    def error_response(self, status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    def model_not_found(self, name: Any) -> web.Response:
        return web.json_response(
            {
                "error": {
                    "message": f'Model "{name}" not found. Please specify a valid model.',
                    "type": "invalid_request_error",
                    "param": "model",
                    "code": "model_not_found",
                }
            },
            status=404,
        )

    def unknown_path(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"error": f"Unexpected endpoint or method. ({request.method} {request.path})"}
        )

    async def v0_models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [self.v0_entry(m) for m in self.state.models]}
        )

    async def v0_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in self.state.models:
            return self.model_not_found(model)
        return web.json_response(self.v0_entry(model))

    def v0(self, handler: Handler) -> Handler:
        """The /api/v0 variant of an OpenAI handler: same answer plus LM Studio's stats."""

        async def v0_handler(request: web.Request) -> web.StreamResponse:
            response = await handler(request)
            if not isinstance(response, web.Response) or response.status != 200:
                return response
            if not isinstance(response.body, bytes):
                return response
            answer = json.loads(response.body)
            model = str(answer.get("model", ""))
            answer["stats"] = {
                "tokens_per_second": 100.0,
                "time_to_first_token": 0.05,
                "generation_time": 0.1,
                "stop_reason": "eosFound",
            }
            answer["model_info"] = {
                "arch": self.v0_entry(model)["arch"],
                "quant": "Q4_K_M",
                "format": "gguf",
                "context_length": 4096,
            }
            answer["runtime"] = {
                "name": "llama.cpp-linux-x86_64-avx2",
                "version": "1.50.0",
                "supported_formats": ["gguf"],
            }
            return web.json_response(answer)

        return v0_handler
