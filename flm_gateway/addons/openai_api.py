"""The OpenAI-compatible API surface: which paths exist, what their requests must contain.

Policy (on `request`, for listeners without `passthrough`):
- Paths are matched exactly on the canonical target `canonical_target` put on the
  flow (so `/v1/%63hat/completions` and `//v1/./chat/completions` are
  `/v1/chat/completions`, as the engine would read them), query removed; case and
  a trailing slash are not normalised: `/V1/models` or `/v1/chat/completions/` are
  unknown paths (404), never guessed into a known one.
- `GET /v1/models` is answered here from the engine directory: every model of every
  reachable engine once (`owned_by` = engine name) plus the aliases routes define
  while one of their engines or fallbacks is reachable.
  `GET /v1/models/{id}` (the id percent-decoded) answers one of them or 404
  `model_not_found`.
- `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: the body must
  be a JSON object with a non-empty string `model`, else 400. `POST
  /v1/audio/transcriptions` and `/v1/audio/translations`: multipart with a `model`
  field, else 400.
- Known path, wrong method: 405. Anything else: 404 `unknown_url`.
Writes `flm.api.kind`, `flm.api.model`, `flm.api.stream` and, for JSON bodies,
`flm.api.body` (the parsed object; routing re-serialises it when it changes it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed
from flm_gateway.errors import error_response, json_response
from flm_gateway.routing_table import is_pattern
from flm_gateway.runtime import Runtime

JSON_ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
MULTIPART_ENDPOINTS = {
    "/v1/audio/transcriptions": "transcriptions",
    "/v1/audio/translations": "translations",
}
MODELS_PATH = "/v1/models"


def _bad_request(message: str, code: str = "invalid_request") -> http.Response:
    return error_response(400, message, code=code)


def parse_json_body(request: http.Request) -> dict[str, Any] | http.Response:
    """The request's JSON object with a `model`, or the 400 response explaining what is wrong."""
    try:
        body = json.loads(request.get_content(strict=False) or b"")
    except (ValueError, UnicodeDecodeError):
        return _bad_request("The request body is not valid JSON.", "invalid_json")
    if not isinstance(body, dict):
        return _bad_request("The request body must be a JSON object.", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _bad_request(
            "The request must name a model (string field 'model').", "missing_model"
        )
    return body


def parse_multipart_model(request: http.Request) -> str | http.Response:
    """The `model` form field of a multipart upload, or a 400 response."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return _bad_request("This endpoint takes multipart/form-data.", "invalid_content_type")
    try:
        value = request.multipart_form.get(b"model")
    except ValueError:
        return _bad_request("The multipart body could not be parsed.", "invalid_multipart")
    if not value:
        return _bad_request("The upload must include a 'model' form field.", "missing_model")
    return value.decode("utf-8", "replace")


class OpenAIApi:
    def __init__(self) -> None:
        self._runtime: Runtime | None = None

    def apply_runtime(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or "flm.route.engine" in flow.metadata:
            return
        listener = flow.metadata.get("flm.listener")
        if listener is None or listener.passthrough is not None:
            return
        path = flow.request.path.split("?", 1)[0]
        method = flow.request.method
        kind = JSON_ENDPOINTS.get(path) or MULTIPART_ENDPOINTS.get(path)
        if kind is not None:
            if method != "POST":
                flow.response = error_response(
                    405, f"Use POST for {path}.", code="method_not_allowed"
                )
                return
            parsed = (
                parse_json_body(flow.request)
                if path in JSON_ENDPOINTS
                else parse_multipart_model(flow.request)
            )
            if isinstance(parsed, http.Response):
                flow.response = parsed
                return
            flow.metadata["flm.api.kind"] = kind
            if isinstance(parsed, dict):
                flow.metadata["flm.api.body"] = parsed
                flow.metadata["flm.api.model"] = parsed["model"]
                flow.metadata["flm.api.stream"] = bool(parsed.get("stream"))
            else:
                flow.metadata["flm.api.model"] = parsed
                flow.metadata["flm.api.stream"] = False
        elif path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
            flow.metadata["flm.api.kind"] = "models"
            if method not in ("GET", "HEAD"):
                flow.response = error_response(
                    405, "Use GET for /v1/models.", code="method_not_allowed"
                )
                return
            # The id decoded as an engine would decode it (`llama3%3Alatest`); the
            # canonical path has no `%2F` and only UTF-8 escapes.
            flow.response = self._models_response(unquote(path[len(MODELS_PATH) + 1 :]))
        else:
            flow.metadata["flm.api.kind"] = "unknown"
            flow.response = error_response(
                404,
                f"Unknown path {path!r}; this gateway serves the OpenAI API under /v1.",
                code="unknown_url",
            )

    def model_list(self) -> list[dict[str, Any]]:
        """The merged `/v1/models` data: engine models, then route aliases, each id once."""
        assert self._runtime is not None
        directory = self._runtime.directory
        created = int(self._runtime.started_at)
        entries: dict[str, dict[str, Any]] = {}
        for model_id, state in directory.models():
            entries.setdefault(
                model_id,
                {"id": model_id, "object": "model", "created": created, "owned_by": state.name},
            )
        for route in self._runtime.loaded.config.routes:
            if is_pattern(route.model) or route.model in entries:
                continue
            targets = [*route.engines, *(t.engine for t in route.fallback_targets)]
            reachable = [name for name in targets if directory.get(name).reachable]
            if reachable:
                entries[route.model] = {
                    "id": route.model,
                    "object": "model",
                    "created": created,
                    "owned_by": reachable[0],
                }
        return list(entries.values())

    def _models_response(self, model_id: str) -> http.Response:
        data = self.model_list()
        if not model_id:
            payload: dict[str, Any] = {"object": "list", "data": data}
        else:
            found = next((entry for entry in data if entry["id"] == model_id), None)
            if found is None:
                return error_response(
                    404, f"The model {model_id!r} does not exist.", code="model_not_found"
                )
            payload = found
        return json_response(200, payload)
