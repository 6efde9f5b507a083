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
- `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: the body is
  read once, by `bodies.strict_json` (refuses anything two JSON parsers could read
  differently: duplicate or case-folded keys, NaN, encodings, depth...), must name a
  non-empty string `model` (`missing_model`), and its known fields must have their
  types (`bodies.schema`); known fields that are null are removed (re-serialised).
  `POST /v1/audio/transcriptions` and `/v1/audio/translations`: one
  `multipart/form-data` content type, read by `bodies.multipart` (refuses duplicate
  fields, odd parts and framing), with typed text fields and a `model`; the body is
  then replaced by the canonical serialisation of the parts read (fresh boundary),
  so the engine gets exactly what was checked. A body that its Content-Encoding
  does not decode is refused too. All: 400 with `param` naming the field.
- Known path, wrong method: 405. Anything else: 404 `unknown_url`. Client text in
  messages is quoted through `text.echo` (bounded, controls escaped).
Writes `flm.api.kind`, `flm.api.model`, `flm.api.stream` and, for JSON bodies,
`flm.api.body` (the parsed object; whoever changes it re-serialises it), for
uploads `flm.api.form` (the parts read, in order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from mitmproxy import http

from flm_gateway.bodies import BodyError
from flm_gateway.bodies.multipart import Part, read_form, write_form
from flm_gateway.bodies.schema import check_form, check_json
from flm_gateway.bodies.strict_json import read_object
from flm_gateway.config.route_settings import RouteConfig
from flm_gateway.core.errors import error_response, json_response
from flm_gateway.core.text import echo
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.proxy.addon_contract import NotConfigured
from flm_gateway.proxy.api_kind import JSON_ENDPOINTS, MODELS_PATH, MULTIPART_ENDPOINTS, ApiKind
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    API_BODY,
    API_FORM,
    API_KIND,
    API_MODEL,
    API_STREAM,
    LISTENER,
    ROUTE_ENGINE,
)
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.routing.table import is_pattern


def _bad_request(message: str, code: str = "invalid_request") -> http.Response:
    return error_response(400, message, code=code)


def _refusal(error: BodyError) -> http.Response:
    return error_response(400, error.message, code=error.code, param=error.param)


def _content(request: http.Request) -> bytes:
    """The body as the engine will decode it (Content-Encoding applied), or BodyError."""
    try:
        return request.get_content() or b""
    except ValueError:
        raise BodyError(
            "The body does not decode per its Content-Encoding.", "invalid_encoding"
        ) from None


def _missing_model() -> http.Response:
    return error_response(
        400,
        "The request must name a model (string field 'model').",
        code="missing_model",
        param="model",
    )


def parse_json_body(request: http.Request, kind: str) -> dict[str, Any] | http.Response:
    """The request's checked JSON object with a `model`, or the 400 response saying why."""
    try:
        body = read_object(_content(request))
        changed = check_json(kind, body)  # first: "MODEL" alone is ambiguous, not missing
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _missing_model()
        if changed:
            request.content = json.dumps(body).encode()
    except BodyError as error:
        return _refusal(error)
    return body


def parse_form(request: http.Request) -> tuple[list[Part], dict[str, Any]] | http.Response:
    """The parts and text fields of an upload (re-serialised canonically), or a 400."""
    content_types = request.headers.get_all("content-type")
    if len(content_types) != 1 or not content_types[0].lower().startswith("multipart/form-data"):
        return _bad_request(
            "This endpoint takes multipart/form-data (one Content-Type header).",
            "invalid_content_type",
        )
    try:
        parts = read_form(content_types[0], _content(request))
        fields = check_form(parts)
    except BodyError as error:
        return _refusal(error)
    if not fields.get("model"):
        return _missing_model()
    request.headers["content-type"], request.content = write_form(parts)
    return parts, fields


@dataclass(frozen=True)
class _Catalog:
    """What `/v1/models` lists: the engines' models and the routes' aliases."""

    directory: EngineDirectory
    routes: tuple[RouteConfig, ...]
    created: int


class OpenAIApi:
    def __init__(self) -> None:
        self._catalog: _Catalog | None = None

    def prepare(self, runtime: Runtime) -> _Catalog:
        routes = tuple(runtime.loaded.config.routes)
        return _Catalog(runtime.directory, routes, int(runtime.started_at))

    def commit(self, prepared: _Catalog) -> None:
        self._catalog = prepared

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or ROUTE_ENGINE.is_set(flow):
            return
        listener = LISTENER.get(flow)
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
            API_KIND.set(flow, kind)
            if path in JSON_ENDPOINTS:
                body = parse_json_body(flow.request, kind)
                if isinstance(body, http.Response):
                    flow.response = body
                    return
                API_BODY.set(flow, body)
                API_MODEL.set(flow, body["model"])
                API_STREAM.set(flow, body.get("stream") is True)
            else:
                form = parse_form(flow.request)
                if isinstance(form, http.Response):
                    flow.response = form
                    return
                parts, fields = form
                API_FORM.set(flow, parts)
                API_MODEL.set(flow, fields["model"])
                API_STREAM.set(flow, fields.get("stream") == "true")
        elif path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
            API_KIND.set(flow, ApiKind.MODELS)
            if method not in ("GET", "HEAD"):
                flow.response = error_response(
                    405, "Use GET for /v1/models.", code="method_not_allowed"
                )
                return
            # The id decoded as an engine would decode it (`llama3%3Alatest`); the
            # canonical path has no `%2F` and only UTF-8 escapes.
            flow.response = self._models_response(unquote(path[len(MODELS_PATH) + 1 :]))
        else:
            API_KIND.set(flow, ApiKind.UNKNOWN)
            flow.response = error_response(
                404,
                f"Unknown path '{echo(path)}'; this gateway serves the OpenAI API under /v1.",
                code="unknown_url",
            )

    def model_list(self) -> list[dict[str, Any]]:
        """The merged `/v1/models` data: engine models, then route aliases, each id once."""
        catalog = self._catalog
        if catalog is None:
            raise NotConfigured(self)
        directory, created = catalog.directory, catalog.created
        entries: dict[str, dict[str, Any]] = {}
        for model_id, state in directory.models():
            entries.setdefault(
                model_id,
                {"id": model_id, "object": "model", "created": created, "owned_by": state.name},
            )
        for route in catalog.routes:
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
                    404, f"The model '{echo(model_id)}' does not exist.", code="model_not_found"
                )
            payload = found
        return json_response(200, payload)
