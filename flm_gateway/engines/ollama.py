"""Ollama (kind `ollama`): native API under `/api`, OpenAI-compatible layer under `/v1`.

- Health: `GET /api/version` (`{"version": "0.5.7"}`). 200: healthy; another
  status: degraded; no answer: unreachable. Ollama has no readiness signal of
  its own: it loads models on the first request that names them.
- Models: `GET /api/tags` lists every pulled model (`name` such as
  `llama3.2:latest`); `GET /api/ps` lists the loaded ones with the context length
  they were loaded with (`context_length`, Ollama >= 0.6). A pulled model not in
  `/api/ps` is `loaded: False` with no context length (Ollama only knows it per
  load; `POST /api/show` per model would tell the trained maximum, which is not
  what a request gets, so it is not asked). A failing `/api/ps` leaves the loaded
  state unknown (None) rather than failing the list.
- Differences from OpenAI's API that the gateway translates:
  - Ollama accepts `name` for `name:latest`: such models carry the alias, so
    routing by discovery finds `llama3.2` as well as `llama3.2:latest`.
  - Streams: `stream_options.include_usage` is honoured by `/v1` since Ollama
    0.5.2 (older versions ignore the field), so the gateway asks for it.
  - Native streams (`/api/chat`, `/api/generate` on passthrough listeners) are
    NDJSON whose last object (`"done": true`) carries `prompt_eval_count` and
    `eval_count`; token accounting reads those.
- Ollama has no API keys; `api_key` is sent anyway when set (for a proxy in front).
- Admin routes (`ADMIN_ROUTES`, from `GenerateRoutes` in Ollama's `server/routes.go`,
  v0.32.15 / v0.33.0-rc2): the model store (pull, push, create, copy, delete, blob
  uploads) and the routes that act as the server's ollama.com account (`/api/me`,
  `/api/signout`, `/api/user/keys/...`, the experimental web search/fetch proxies,
  which spend that account). Ollama serves gin behind Go's ServeMux: both decode
  the path before matching.
- Detection: port 11434, program `ollama`.
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
    as_int,
    optional_json,
    text_field,
)
from flm_gateway.engines.admin_routes import AdminRoute, AdminRoutes
from flm_gateway.engines.openai import OpenAIAdapter

VERSION_PATH = "/api/version"
TAGS_PATH = "/api/tags"
PS_PATH = "/api/ps"
LATEST = ":latest"
ADMIN_ROUTES = AdminRoutes(
    (
        AdminRoute("/api/pull", "download a model from a registry"),
        AdminRoute("/api/push", "upload a model to a registry"),
        AdminRoute("/api/create", "create a model"),
        AdminRoute("/api/copy", "copy a model"),
        AdminRoute("/api/delete", "delete a model"),
        AdminRoute("/api/blobs", "upload or probe model blobs"),
        AdminRoute("/api/me", "the server's ollama.com account"),
        AdminRoute("/api/signout", "sign the server out of ollama.com"),
        AdminRoute("/api/user/keys", "remove the server's ollama.com key (deprecated signout)"),
        AdminRoute("/api/experimental/web_search", "web search on the server's account"),
        AdminRoute("/api/experimental/web_fetch", "web fetch on the server's account"),
    )
)


def _entries(payload: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        raise EngineUnavailable(f"GET {path}: not an Ollama {{'models': [...]}} object")
    return [entry for entry in payload["models"] if isinstance(entry, dict)]


def _name(entry: dict[str, Any]) -> str | None:
    name = entry.get("name") or entry.get("model")
    return name if isinstance(name, str) and name else None


def parse_ollama_models(tags: Any, ps: Any | None) -> list[ModelInfo]:
    """ModelInfo from `/api/tags` and (when available) `/api/ps` payloads."""
    loaded: dict[str, int | None] = {}
    if not (isinstance(ps, dict) and isinstance(ps.get("models"), list)):
        ps = None  # loaded state unknown; the pulled models still count
    if ps is not None:
        for entry in _entries(ps, PS_PATH):
            name = _name(entry)
            if name is not None:
                loaded[name] = as_int(entry.get("context_length"))
    names = [n for n in (_name(entry) for entry in _entries(tags, TAGS_PATH)) if n is not None]
    names += [name for name in loaded if name not in names]
    return [
        ModelInfo(
            id=name,
            context_length=loaded.get(name),
            loaded=(name in loaded) if ps is not None else None,
            aliases=(name[: -len(LATEST)],) if name.endswith(LATEST) else (),
        )
        for name in names
    ]


class OllamaAdapter(OpenAIAdapter):
    kind = EngineKind.OLLAMA
    default_port: int | None = 11434
    program: str | None = "ollama"
    stream_usage = True
    admin_routes = ADMIN_ROUTES
    health_path = VERSION_PATH

    async def list_models(self, client: EngineClient) -> list[ModelInfo]:
        tags = await client.get_json(TAGS_PATH)
        return parse_ollama_models(tags, await optional_json(client, PS_PATH))

    async def healthy(self, client: EngineClient, reply: Reply) -> HealthReport:
        version = text_field(reply.body, "version")
        if version is None:
            return HealthReport(
                HealthState.DEGRADED, f"GET {VERSION_PATH}: no version; is this Ollama?"
            )
        return HealthReport(HealthState.HEALTHY, version=version)
