"""Any OpenAI-compatible server: models from GET /v1/models, healthy when that answers.

This is also the common base of the engine kinds that serve an OpenAI-compatible
API under /v1 (vLLM, LM Studio, llama.cpp, Ollama); their own modules add what
their native APIs tell beyond it.
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
)


def parse_openai_models(payload: Any) -> list[ModelInfo]:
    """ModelInfo for each entry of an OpenAI `{"data": [{"id": ...}]}` list."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise EngineUnavailable("the model list is not an OpenAI {'data': [...]} object")
    models = []
    for entry in payload["data"]:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            length = entry.get("max_model_len") or entry.get("context_length")
            models.append(
                ModelInfo(
                    id=entry["id"], context_length=length if isinstance(length, int) else None
                )
            )
    return models


class OpenAIAdapter:
    """An engine known only by its OpenAI-compatible API."""

    kind = EngineKind.OPENAI
    openai_prefix = "/v1"

    async def list_models(self, client: EngineClient) -> list[ModelInfo]:
        return parse_openai_models(await client.get_json(f"{self.openai_prefix}/models"))

    async def check_health(self, client: EngineClient) -> HealthReport:
        try:
            models = await self.list_models(client)
        except EngineUnavailable as exc:
            return HealthReport(HealthState.UNREACHABLE, str(exc))
        if not models:
            return HealthReport(HealthState.DEGRADED, "the engine lists no model")
        return HealthReport(HealthState.HEALTHY, models=tuple(models))
