"""llama.cpp's `llama-server` (kind `llamacpp`).

- Health: `GET /health`: 200 `{"status": "ok"}`: healthy; 503 `{"error":
  {"message": "Loading model"}}` while the model loads (or another error):
  degraded, with the engine's message; no answer: unreachable. When healthy,
  `GET /props` gives the version (`build_info`) and `GET /slots` how many of the
  parallel slots are busy (`is_processing`), shown in the detail; either may
  fail (`--api-key` protects them, `--no-slots` disables `/slots`) without
  changing the state.
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
- Detection: port 8080, program `llama-server`.
"""

from __future__ import annotations

from typing import Any

from flm_gateway.config.engines import EngineKind
from flm_gateway.engines.base import (
    EngineClient,
    EngineUnavailable,
    HealthReport,
    HealthState,
    ModelInfo,
    answered,
    as_int,
    error_message,
)
from flm_gateway.engines.openai import MODELS_PATH, model_entries

HEALTH_PATH = "/health"
PROPS_PATH = "/props"
SLOTS_PATH = "/slots"


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


class LlamaCppAdapter:
    kind = EngineKind.LLAMACPP
    openai_prefix = "/v1"
    default_port: int | None = 8080
    program: str | None = "llama-server"
    stream_usage = True

    async def list_models(self, client: EngineClient) -> list[ModelInfo]:
        return parse_llamacpp_models(await client.get_json(MODELS_PATH))

    async def check_health(self, client: EngineClient) -> HealthReport:
        try:
            reply = await client.get(HEALTH_PATH)
        except EngineUnavailable as exc:
            return HealthReport(HealthState.UNREACHABLE, str(exc))
        if not reply.ok:
            message = error_message(reply.body)
            detail = message if reply.status == 503 and message else answered(HEALTH_PATH, reply)
            return HealthReport(HealthState.DEGRADED, detail)
        version = None
        detail = ""
        try:
            props = await client.get_json(PROPS_PATH)
            if isinstance(props, dict) and isinstance(props.get("build_info"), str):
                version = props["build_info"]
            detail = slots_detail(await client.get_json(SLOTS_PATH))
        except EngineUnavailable:
            pass
        return HealthReport(HealthState.HEALTHY, detail, version=version)
