"""A fake vLLM OpenAI-compatible server (`vllm serve`).

Paths and shapes from vLLM's `vllm/entrypoints/openai/api_server.py` and
`protocol.py` (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html):
- GET /health: 200 with an empty body; 503, empty, when the engine is dead (degraded).
- GET /version: {"version": "..."}; GET /ping and POST /ping (SageMaker): 200.
- GET /metrics: Prometheus text with `vllm:` metrics.
- GET /v1/models: cards with owned_by "vllm", root, parent, max_model_len, permission.
- Streams: the first chunk carries {"role": "assistant", "content": ""}; the last content
  chunk carries finish_reason; no "usage": null on chunks; include_usage is honoured.
- Errors: {"error": {"message", "type": "NotFoundError", "param", "code": 404}}
  (vLLM >= 0.10); mid-stream errors are `data: {"error": ...}` then `data: [DONE]`.
- With --api-key only /v1/* paths need `Authorization: Bearer`, and a bad key gets
  401 {"error": "Unauthorized"}. Unknown paths: FastAPI's 404 {"detail": "Not Found"}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web

from tests.support.fakes.generate import new_id
from tests.support.fakes.openai_like import JSONDict, OpenAIKind, sse

VLLM_VERSION = "0.11.0"
ERROR_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    404: "NotFoundError",
    429: "TooManyRequestsError",
    503: "ServiceUnavailableError",
}


class VLLMKind(OpenAIKind):
    name: ClassVar[str] = "vllm"
    default_models: ClassVar[tuple[str, ...]] = ("Qwen/Qwen2.5-0.5B-Instruct",)
    health_paths: ClassVar[frozenset[str]] = frozenset({"/health", "/ping"})
    response_headers: ClassVar[Mapping[str, str]] = {"Server": "uvicorn"}
    owned_by: ClassVar[str] = "vllm"
    max_model_len: ClassVar[int] = 4096

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.get("/health", self.health),
            web.get("/ping", self.health),
            web.post("/ping", self.health),
            web.get("/version", self.version),
            web.get("/metrics", self.metrics),
        ]

    def requires_key(self, path: str) -> bool:
        return path.startswith("/v1")

    def model_entry(self, model: str) -> JSONDict:
        created = self.state.created
        return {
            "id": model,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": model,
            "parent": None,
            "max_model_len": self.max_model_len,
            "permission": [
                {
                    "id": new_id("modelperm-"),
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }

    def envelope_extra(self, model: str) -> JSONDict:
        return {}

    def message_extra(self) -> JSONDict:
        return {
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": [],
            "reasoning_content": None,
        }

    def separate_finish_chunk(self) -> bool:
        return False

    def null_usage_on_chunks(self) -> bool:
        return False

    def error_body(self, status: int, message: str) -> JSONDict:
        kind = ERROR_TYPES.get(status, "InternalServerError")
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}

    def stream_error(self, message: str) -> bytes:
        return sse(self.error_body(500, message)) + b"data: [DONE]\n\n"

    def unknown_path(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"detail": "Not Found"}, status=404)

    def unauthorized(self) -> web.Response:
        return web.json_response({"error": "Unauthorized"}, status=401)

    def unhealthy(self) -> web.Response:
        return web.Response(status=503)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VLLM_VERSION})

    async def metrics(self, request: web.Request) -> web.Response:
        lines: list[str] = []
        counts: dict[str, Any] = {
            "num_requests_running": self.state.in_flight,
            "num_requests_waiting": 0,
        }
        for metric, value in counts.items():
            lines.append(f"# TYPE vllm:{metric} gauge")
            lines.extend(f'vllm:{metric}{{model_name="{m}"}} {value}' for m in self.state.models)
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
