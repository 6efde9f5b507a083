"""llama.cpp's `llama-server` (kind `llamacpp`).

- Health: `GET /health`: 200 `{"status": "ok"}`: healthy; 503 `{"error":
  {"message": "Loading model"}}` while the model loads (or another error):
  degraded, with the engine's message; no answer: unreachable. When healthy,
  `GET /props` gives the version (`build_info`) and the number of parallel slots
  (`total_slots`, i.e. `-np`: the engine's capacity, the default concurrency cap,
  see `engine_concurrency`), and `GET /slots` how many of them are busy
  (`is_processing`), shown in the detail; either may fail (`--api-key` protects
  them, `--no-slots` disables `/slots`) without changing the state.
- Models: `GET /v1/models`: one entry per served model (`id` = `--alias`, else
  the file name) with a `meta` block whose `n_ctx` is the context of one slot
  (`-c` divided by `-np`): that is the context length of a request. A single-model
  server has its model loaded; in router mode an entry's `status.value` tells.
- Differences from OpenAI's API, as seen on the real server:
  - Any `model` name is accepted and answered by the loaded model: the gateway
    sends the listed id, so routing stays meaningful.
  - Malformed JSON gets 500, not 400 (the gateway validates bodies first, so a
    5xx from llama.cpp is a real engine error and may go to a fallback).
  - Streams carry usage only with `stream_options.include_usage` (a last chunk
    with `choices: []`), which the gateway asks for; `/v1/completions` streams
    put `usage` in their last choice chunk anyway.
  - A stream that exceeds the slot's context ends after HTTP 200 with an SSE
    `data: {"error": ...}` event and no `[DONE]`.
  - With `--api-key`, everything but `/health` and `/v1/health` needs the key.
- Admin routes (`ADMIN_ROUTES`, from the route registrations in `main()` of
  `tools/server/server.cpp`, 2025-2026 builds): changing server properties (POST
  `/props`; GET stays open), the slots (GET `/slots` shows every slot's prompt and
  generated text, i.e. other clients' conversations; POST `/slots/{id}` saves,
  restores or erases one), the global LoRA adapters, router mode's model management
  (`/models/load`, `/models/unload`, POST/DELETE `/models`; GET stays open), and the
  experimental server-side `/cors-proxy` and `/tools`. cpp-httplib decodes the path
  before matching.
- Detection: port 8080, program `llama-server`.
"""

from __future__ import annotations

from typing import Any

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.engines.adapter import (
    EngineClient,
    HealthReport,
    HealthState,
    ModelInfo,
    Reply,
    answered,
    as_int,
    error_message,
    optional_json,
    text_field,
)
from flm_gateway.engines.admin_routes import READ_ONLY, AdminRoute, AdminRoutes
from flm_gateway.engines.openai import MODELS_PATH, OpenAIAdapter, model_entries

HEALTH_PATH = "/health"
PROPS_PATH = "/props"
SLOTS_PATH = "/slots"
ADMIN_ROUTES = AdminRoutes(
    (
        AdminRoute("/props", "change server properties (POST)", READ_ONLY),
        AdminRoute("/slots", "read, save, restore or erase slots (their prompts)"),
        AdminRoute("/lora-adapters", "set the global LoRA adapters"),
        AdminRoute("/models", "add or remove models in router mode", READ_ONLY),
        AdminRoute("/models/load", "load a model in router mode"),
        AdminRoute("/models/unload", "unload a model in router mode"),
        AdminRoute("/cors-proxy", "fetch any URL from the server (web UI MCP proxy)"),
        AdminRoute("/tools", "run the server's built-in tools"),
    )
)


def _loaded(entry: dict[str, Any]) -> bool | None:
    status = entry.get("status")
    if status is None:
        return True
    value = status.get("value") if isinstance(status, dict) else status
    return value == "loaded" if isinstance(value, str) else None


def parse_llamacpp_models(payload: Any) -> list[ModelInfo]:
    """ModelInfo for each entry of llama-server's `/v1/models` payload."""
    entries = model_entries(payload, f"GET {MODELS_PATH}: not an OpenAI {{'data': [...]}} object")
    models = []
    for entry in entries:
        meta = entry.get("meta")
        length = as_int(meta.get("n_ctx")) if isinstance(meta, dict) else None
        models.append(ModelInfo(id=entry["id"], context_length=length, loaded=_loaded(entry)))
    return models


def slots_detail(payload: Any) -> str:
    """'1/4 slots busy' from a `/slots` payload, or '' when it is not a slot list."""
    if not isinstance(payload, list) or not payload:
        return ""
    busy = sum(1 for slot in payload if isinstance(slot, dict) and slot.get("is_processing"))
    return f"{busy}/{len(payload)} slots busy"


class LlamaCppAdapter(OpenAIAdapter):
    kind = EngineKind.LLAMACPP
    default_port: int | None = 8080
    program: str | None = "llama-server"
    stream_usage = True
    admin_routes = ADMIN_ROUTES
    health_path = HEALTH_PATH

    def parse_models(self, payload: Any) -> list[ModelInfo]:
        return parse_llamacpp_models(payload)

    def degraded_detail(self, path: str, reply: Reply) -> str:
        """llama.cpp's 503 while it loads its model says so (`Loading model`): that message is
        the detail; other errors are described as usual."""
        message = error_message(reply.body)
        return message if reply.status == 503 and message else answered(path, reply)

    async def healthy(self, client: EngineClient, reply: Reply) -> HealthReport:
        props = await optional_json(client, PROPS_PATH)
        slots = await optional_json(client, SLOTS_PATH)
        version = text_field(props, "build_info")
        capacity = as_int(props.get("total_slots")) if isinstance(props, dict) else None
        return HealthReport(
            HealthState.HEALTHY, slots_detail(slots), version=version, capacity=capacity
        )
