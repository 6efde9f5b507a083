"""LM Studio (kind `lmstudio`): its local server (`lms server start`, port 1234).

- Health: LM Studio has no health path; its model list is the signal.
  `GET /api/v0/models` (LM Studio >= 0.3.6) answering 200 with a `data` list:
  healthy; 404, or LM Studio's 200 `{"error": "Unexpected endpoint or method."}`
  for unknown paths (older versions): `GET /v1/models` decides instead; any other
  error status: degraded; no answer: unreachable.
- Models: `/api/v0/models` lists every downloaded model with
  `state: "loaded" | "not-loaded"` and `max_context_length` (the model's
  maximum); a loaded model may also carry `loaded_context_length` (what it was
  loaded with), which is then its context length. From `/v1/models` only ids are
  known (loaded state and context length stay unknown).
- Differences from OpenAI's API that matter to the gateway:
  - With just-in-time loading on (the default), `/v1/models` also lists models
    that are not loaded, and the first request for one loads it, which can take
    long: keep the engine's `timeouts.response` generous.
  - `stream_options.include_usage` is honoured since 0.3.18 (older versions send
    no usage in streams, and the gateway then estimates).
  - With API tokens enabled (0.4+) every path needs `api_key`.
- Admin routes (`ADMIN_ROUTES`, from LM Studio's REST API reference, 0.4: the
  server is closed source): loading, unloading and downloading models under
  `/api/v1/models/` (the v0 API has no such routes: it loads just in time).
- Detection: port 1234, program `lms` (the CLI installs it in ~/.lmstudio/bin;
  it is looked for on PATH only).
"""

from __future__ import annotations

from typing import Any

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.engines.adapter import (
    EngineClient,
    EngineUnavailable,
    HealthReport,
    HealthState,
    ModelInfo,
    answered,
    as_int,
)
from flm_gateway.engines.admin_routes import AdminRoute, AdminRoutes
from flm_gateway.engines.openai import OpenAIAdapter, model_entries

REST_MODELS_PATH = "/api/v0/models"
ADMIN_ROUTES = AdminRoutes(
    (
        AdminRoute("/api/v1/models/load", "load a model"),
        AdminRoute("/api/v1/models/unload", "unload a model"),
        AdminRoute("/api/v1/models/download", "download a model, or its download status"),
    )
)


def parse_lmstudio_models(payload: Any) -> list[ModelInfo]:
    """ModelInfo for each entry of an `/api/v0/models` payload."""
    entries = model_entries(payload, f"GET {REST_MODELS_PATH}: not a {{'data': [...]}} object")
    models = []
    for entry in entries:
        state = entry.get("state")
        loaded = state == "loaded" if state in ("loaded", "not-loaded") else None
        length = as_int(entry.get("max_context_length"))
        if loaded:
            length = as_int(entry.get("loaded_context_length")) or length
        models.append(ModelInfo(id=entry["id"], context_length=length, loaded=loaded))
    return models


def _has_data(body: Any) -> bool:
    return isinstance(body, dict) and "data" in body


class LmStudioAdapter(OpenAIAdapter):
    kind = EngineKind.LMSTUDIO
    default_port: int | None = 1234
    program: str | None = "lms"
    stream_usage = True
    admin_routes = ADMIN_ROUTES

    async def list_models(self, client: EngineClient) -> list[ModelInfo]:
        report = await self.check_health(client)
        if report.models is None:
            raise EngineUnavailable(report.detail)
        return list(report.models)

    async def check_health(self, client: EngineClient) -> HealthReport:
        try:
            reply = await client.get(REST_MODELS_PATH)
        except EngineUnavailable as exc:
            return HealthReport(HealthState.UNREACHABLE, str(exc))
        if reply.status == 404 or (reply.ok and not _has_data(reply.body)):
            # Before 0.3.6 there is no REST API; LM Studio answers unknown paths 200 with
            # {"error": "Unexpected endpoint or method. (GET /api/v0/models)"}: OpenAI's
            # `/v1/models` (the common health check) decides.
            return await super().check_health(client)
        if not reply.ok:
            return HealthReport(HealthState.DEGRADED, answered(REST_MODELS_PATH, reply))
        try:
            models = parse_lmstudio_models(reply.body)
        except EngineUnavailable as exc:
            return HealthReport(HealthState.DEGRADED, str(exc))
        return HealthReport(HealthState.HEALTHY, models=tuple(models))
