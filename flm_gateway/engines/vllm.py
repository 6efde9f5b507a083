"""vLLM (kind `vllm`): its OpenAI-compatible server (`vllm serve`).

- Health: `GET /health`, 200 with an empty body when the engine runs; 503 (or
  another error) when its engine process died: degraded. vLLM binds its port only
  after the model is loaded, so a loading vLLM is unreachable, not degraded.
  `GET /version` (`{"version": "0.6.3"}`) gives the version; it is asked only
  when `/health` is 200.
- Models: `GET /v1/models`; each entry carries `max_model_len` (the context
  length of a request). vLLM serves only what it loaded at start (the base model
  and any LoRA adapters, whose entries have a `parent`), so every listed model is
  `loaded: True`.
- Capacity: vLLM runs at most `--max-num-seqs` sequences at once (default 256, more on
  large GPUs) and queues the rest in its own scheduler. No route it serves by default
  tells that number (`/metrics` has the running and waiting counts, not the limit;
  `/server_info`, which has the whole config, exists only in its dev mode), so a vLLM
  engine reports no capacity and gets no default concurrency cap (`engine_concurrency`).
- Differences from OpenAI's API: none to translate. `/health` and `/version`
  need no key even with `--api-key`; `/v1/*` does. vLLM honours
  `stream_options.include_usage` (the gateway asks for it).
- Admin routes (`ADMIN_ROUTES`, the operational, development, LoRA and profiler
  routes of vLLM's route table as its `docs/usage/security.md` lists them, main
  2026): runtime LoRA loading, pause/resume, elastic scaling, weight updates, request
  aborts, the dev-mode routes (`/server_info`, cache resets, sleep/wake,
  `/collective_rpc`), the profiler, and `/tokenizer_info` (chat templates). Most of
  them need no `--api-key` even when vLLM has one. uvicorn decodes the path before
  starlette matches it.
- Detection: port 8000, program `vllm`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.engines.adapter import (
    EngineClient,
    HealthReport,
    HealthState,
    ModelInfo,
    Reply,
    optional_json,
    text_field,
)
from flm_gateway.engines.admin_routes import AdminRoute, AdminRoutes
from flm_gateway.engines.openai import OpenAIAdapter, parse_openai_models

HEALTH_PATH = "/health"
VERSION_PATH = "/version"
ADMIN_ROUTES = AdminRoutes(
    (
        AdminRoute("/v1/load_lora_adapter", "load a LoRA adapter at runtime"),
        AdminRoute("/v1/unload_lora_adapter", "unload a LoRA adapter"),
        AdminRoute("/pause", "pause generation"),
        AdminRoute("/resume", "resume generation"),
        AdminRoute("/is_paused", "pause state"),
        AdminRoute("/scale_elastic_ep", "scale the expert-parallel deployment"),
        AdminRoute("/is_scaling_elastic_ep", "scaling state"),
        AdminRoute("/init_weight_transfer_engine", "start a weight transfer (RLHF)"),
        AdminRoute("/update_weights", "replace the model's weights"),
        AdminRoute("/get_world_size", "distributed world size"),
        AdminRoute("/abort_requests", "abort in-flight requests"),
        AdminRoute("/server_info", "the server's configuration (dev mode)"),
        AdminRoute("/reset_prefix_cache", "reset the prefix cache (dev mode)"),
        AdminRoute("/reset_mm_cache", "reset the multimodal cache (dev mode)"),
        AdminRoute("/reset_encoder_cache", "reset the encoder cache (dev mode)"),
        AdminRoute("/sleep", "put the engine to sleep (dev mode)"),
        AdminRoute("/wake_up", "wake the engine (dev mode)"),
        AdminRoute("/is_sleeping", "sleep state (dev mode)"),
        AdminRoute("/collective_rpc", "call any method on the workers (dev mode)"),
        AdminRoute("/start_profile", "start the profiler"),
        AdminRoute("/stop_profile", "stop the profiler"),
        AdminRoute("/tokenizer_info", "tokenizer configuration and chat template"),
    )
)


class VllmAdapter(OpenAIAdapter):
    kind = EngineKind.VLLM
    default_port: int | None = 8000
    program: str | None = "vllm"
    stream_usage = True
    admin_routes = ADMIN_ROUTES
    health_path = HEALTH_PATH

    def parse_models(self, payload: Any) -> list[ModelInfo]:
        """vLLM lists only what it loaded at start: every model is loaded."""
        return [replace(model, loaded=True) for model in parse_openai_models(payload)]

    async def healthy(self, client: EngineClient, reply: Reply) -> HealthReport:
        version = text_field(await optional_json(client, VERSION_PATH), "version")
        return HealthReport(HealthState.HEALTHY, version=version)
