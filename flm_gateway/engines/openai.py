"""Any OpenAI-compatible server (kind `openai`): known only by its `/v1` API.

- Health: `GET /v1/models`. 200 with an OpenAI `{"data": [...]}` list: healthy
  (the list is the model list); any other HTTP answer: degraded; no answer:
  unreachable. A 401/403 here usually means a wrong `api_key`.
- Models: `GET /v1/models`; `context_length` from `max_model_len` or
  `context_length` when the server adds one (OpenAI itself does not).
- Differences from OpenAI's API: none assumed. `stream_options.include_usage` is
  not injected for this kind (some compatible servers reject unknown fields), so
  stream usage is counted only when the client asked for it or the server sends
  it anyway, else estimated.
- Admin routes: none. The OpenAI API has no engine management, and what else an
  unknown server behind this kind serves cannot be known: a passthrough listener to
  it forwards every path (put such a server's own admin API behind its own auth).
- Detection: no default port, no program.
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
    Reply,
    answered,
    as_int,
    health_get,
)
from flm_gateway.engines.admin_routes import AdminRoutes

MODELS_PATH = "/v1/models"


def model_entries(payload: Any, error: str) -> list[dict[str, Any]]:
    """The entries with a string `id` of a `{"data": [...]}` model list (OpenAI's shape,
    also LM Studio's REST API); raises EngineUnavailable(`error`) for any other shape."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise EngineUnavailable(error)
    return [e for e in payload["data"] if isinstance(e, dict) and isinstance(e.get("id"), str)]


def parse_openai_models(payload: Any) -> list[ModelInfo]:
    """ModelInfo for each entry of an OpenAI `{"data": [{"id": ...}]}` list."""
    entries = model_entries(payload, "the model list is not an OpenAI {'data': [...]} object")
    return [
        ModelInfo(
            id=entry["id"],
            context_length=as_int(entry.get("max_model_len"))
            or as_int(entry.get("context_length")),
        )
        for entry in entries
    ]


class OpenAIAdapter:
    """An engine known only by its OpenAI-compatible API, and the base of every engine's
    adapter: every engine speaks that API, so an engine's adapter states its own facts
    (the class attributes) and overrides only what its engine does differently.

    The common steps: the model list is `parse_models` of `GET /v1/models`; the health
    check is `GET health_path` (no answer: unreachable; an error status: degraded, with
    `degraded_detail`), and a 2xx answer is what `healthy` makes of it.
    """

    kind = EngineKind.OPENAI
    openai_prefix = "/v1"
    default_port: int | None = None
    program: str | None = None
    stream_usage = False
    admin_routes = AdminRoutes(())
    health_path = MODELS_PATH
    """The path of the engine's own health signal."""

    async def list_models(self, client: EngineClient) -> list[ModelInfo]:
        return self.parse_models(await client.get_json(MODELS_PATH))

    def parse_models(self, payload: Any) -> list[ModelInfo]:
        """The models of a `GET /v1/models` answer; raises EngineUnavailable."""
        return parse_openai_models(payload)

    async def check_health(self, client: EngineClient) -> HealthReport:
        reply = await health_get(client, self.health_path, self.degraded_detail)
        if isinstance(reply, HealthReport):
            return reply
        return await self.healthy(client, reply)

    def degraded_detail(self, path: str, reply: Reply) -> str:
        """The detail of the degraded report for an error answer to GET `path`."""
        return answered(path, reply)

    async def healthy(self, client: EngineClient, reply: Reply) -> HealthReport:
        """The report for a 2xx answer at `health_path`: here a model list, healthy when it
        is one (its models come with the report)."""
        try:
            models = parse_openai_models(reply.body)
        except EngineUnavailable as exc:
            return HealthReport(HealthState.DEGRADED, f"GET {self.health_path}: {exc}")
        return HealthReport(HealthState.HEALTHY, models=tuple(models))
