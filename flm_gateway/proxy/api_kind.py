"""The kind of API call a flow is, and the endpoint tables that decide it.

`flow_meta.API_KIND` holds an `ApiKind` (who writes and reads it is listed there).
`ROUTED_KINDS` are the calls routed to an engine by their `model`: the one definition,
so routing and the key's model scopes can never disagree on which calls carry a model.
"""

from __future__ import annotations

from enum import StrEnum


class ApiKind(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    TRANSCRIPTIONS = "transcriptions"
    TRANSLATIONS = "translations"
    MODELS = "models"
    UNKNOWN = "unknown"
    PASSTHROUGH = "passthrough"
    HEALTH = "health"
    PREFLIGHT = "preflight"
    """A CORS preflight the gateway answers itself."""
    HONEYPOT = "honeypot"
    """A scanner's probe the honeypot answered."""


ROUTED_KINDS = frozenset(
    {
        ApiKind.CHAT,
        ApiKind.COMPLETIONS,
        ApiKind.EMBEDDINGS,
        ApiKind.TRANSCRIPTIONS,
        ApiKind.TRANSLATIONS,
    }
)
"""Calls routed to an engine by the `model` they name (and checked against key scopes)."""

# The OpenAI endpoints by canonical path: JSON bodies, multipart uploads, the model list.
JSON_ENDPOINTS = {
    "/v1/chat/completions": ApiKind.CHAT,
    "/v1/completions": ApiKind.COMPLETIONS,
    "/v1/embeddings": ApiKind.EMBEDDINGS,
}
MULTIPART_ENDPOINTS = {
    "/v1/audio/transcriptions": ApiKind.TRANSCRIPTIONS,
    "/v1/audio/translations": ApiKind.TRANSLATIONS,
}
MODELS_PATH = "/v1/models"
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
"""Liveness and readiness, answered by the gateway on every listener (`health_endpoints`)."""
