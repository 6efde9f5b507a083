"""Authorisation of a key by model and route, once the requested model is known.

Policy (on `request`, after `openai_api` classified the request and before
routing; the listener scope is checked by `auth`): for a request made with a key
(`flm.auth.key`) whose `scopes.models` or `scopes.routes` is not empty:
- a routed request (chat, completions, embeddings, audio) is allowed only if
  its model matches one of `models` (names or globs) when `models` is set, and
  the route it matches (by the route's `model` value) is one of `routes` when
  `routes` is set (a model no route matches is then refused);
- a passthrough request (an engine's native API, model unknown) is refused;
- `GET /v1/models` is answered with only the models the key may use.
Refused: 403 `model_not_allowed`, recorded as `auth.forbidden`. Keys without
such scopes, and requests without a key, are not affected.
"""

from __future__ import annotations

import fnmatch
import json

from mitmproxy import http

from flm_gateway.core.errors import error_response
from flm_gateway.core.severity import Severity
from flm_gateway.core.text import echo
from flm_gateway.proxy.api_kind import ROUTED_KINDS, ApiKind
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import API_KIND, API_MODEL, AUTH_KEY
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.routing.table import RoutingTable
from flm_gateway.security.events import record
from flm_gateway.state.store import KeyRecord, KeyScopes


class Scopes:
    def __init__(self) -> None:
        self._routes = RoutingTable(())

    def prepare(self, runtime: Runtime) -> RoutingTable:
        return RoutingTable(runtime.loaded.config.routes)

    def commit(self, prepared: RoutingTable) -> None:
        self._routes = prepared

    def allows(self, scopes: KeyScopes, model: str) -> bool:
        if scopes.models and not any(fnmatch.fnmatchcase(model, p) for p in scopes.models):
            return False
        if scopes.routes:
            route = self._routes.match(model)
            if route is None or route.model not in scopes.routes:
                return False
        return True

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        key: KeyRecord | None = AUTH_KEY.get(flow)
        if key is None or not (key.scopes.models or key.scopes.routes):
            return
        kind = API_KIND.get(flow)
        if kind == "models" and flow.response is not None:
            self._filter_models(flow, key.scopes)
            return
        if flow.response is not None:
            return
        model: str | None = API_MODEL.get(flow)
        if kind == ApiKind.PASSTHROUGH or (
            kind in ROUTED_KINDS and not self.allows(key.scopes, model or "")
        ):
            record(flow, "auth.forbidden", Severity.LOW, None, reason="model_scope")
            flow.response = error_response(
                403,
                f"This API key may not use the model '{echo(model)}'."
                if model
                else "This API key is limited to some models; this endpoint cannot be checked.",
                code="model_not_allowed",
            )

    def _filter_models(self, flow: http.HTTPFlow, scopes: KeyScopes) -> None:
        response = flow.response
        if response is None or response.status_code != 200:
            return
        payload = json.loads(response.get_content() or b"{}")
        if isinstance(payload.get("data"), list):
            payload["data"] = [
                entry for entry in payload["data"] if self.allows(scopes, str(entry.get("id")))
            ]
            response.content = json.dumps(payload).encode()
        elif "id" in payload and not self.allows(scopes, str(payload["id"])):
            flow.response = error_response(
                404,
                f"The model '{echo(str(payload['id']))}' does not exist.",
                code="model_not_found",
            )
