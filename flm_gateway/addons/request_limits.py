"""Limits on the shape of a request: allowed paths, body size, max_tokens.

Policy, per listener (`security.request_limits`):
- `allowed_paths` (on `requestheaders`): if set, a path (the canonical one
  `canonical_target` put on the flow, query removed, matched exactly or as a
  glob) outside it gets 404 `unknown_url`, as if it did not exist. Health
  endpoints are always allowed.
- `max_body_size`: a declared `Content-Length` above it gets 413
  `request_too_large` on `requestheaders`, before the body is read; a chunked
  body is measured when complete (`request`). mitmproxy's `server.body_size_limit`
  caps every listener in any case.
- `max_tokens` (on `request`, after `openai_api` parsed the body, before
  routing): the cap is the smallest of the listener's `max_tokens`, the
  matched route's `max_tokens_per_route` entry and the key's own `max_tokens`.
  A request asking for more (`max_tokens` or `max_completion_tokens`) gets 400
  `max_tokens_exceeded`; a chat or completion request asking for none is sent
  with `max_tokens` set to the cap, so no request runs unbounded.
Reads `flm.api.body`, `flm.api.kind`, `flm.api.model`, `flm.auth.key`.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed
from flm_gateway.config import LoadedConfig
from flm_gateway.config.security import RequestLimitSettings
from flm_gateway.errors import error_response
from flm_gateway.routing_table import RoutingTable
from flm_gateway.security.policies import is_health_check, listener_name, per_listener
from flm_gateway.state.store import KeyRecord

TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
CAPPED_KINDS = frozenset({"chat", "completions"})


@dataclass(frozen=True)
class _Limits:
    settings: RequestLimitSettings
    max_body: int


def _too_large(limit: int) -> http.Response:
    return error_response(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )


class RequestLimits:
    def __init__(self) -> None:
        self._limits: Mapping[str, _Limits] = {}
        self._routes = RoutingTable(())

    def apply_config(self, loaded: LoadedConfig) -> None:
        config = loaded.config
        server_limit = config.server.body_size_limit
        self._limits = {
            name: _Limits(
                security.request_limits,
                min(security.request_limits.max_body_size or server_limit, server_limit),
            )
            for name, security in per_listener(config).items()
        }
        self._routes = RoutingTable(config.routes)

    def token_cap(
        self, limits: RequestLimitSettings, model: str | None, key: KeyRecord | None
    ) -> int | None:
        caps = [limits.max_tokens]
        if model is not None and limits.max_tokens_per_route:
            route = self._routes.match(model)
            if route is not None:
                caps.append(limits.max_tokens_per_route.get(route.model))
        if key is not None:
            caps.append(key.limits.max_tokens)
        present = [cap for cap in caps if cap is not None]
        return min(present) if present else None

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or is_health_check(flow):
            return
        limits = self._limits.get(listener_name(flow) or "")
        if limits is None:
            return
        allowed = limits.settings.allowed_paths
        path = flow.request.path.split("?", 1)[0]
        if allowed is not None and not any(fnmatch.fnmatchcase(path, p) for p in allowed):
            flow.response = error_response(
                404, f"Unknown path {path[:200]!r} on this listener.", code="unknown_url"
            )
            return
        declared = flow.request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limits.max_body:
            flow.response = _too_large(limits.max_body)

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or is_health_check(flow):
            return
        limits = self._limits.get(listener_name(flow) or "")
        if limits is None:
            return
        if len(flow.request.raw_content or b"") > limits.max_body:
            flow.response = _too_large(limits.max_body)
            return
        body = flow.metadata.get("flm.api.body")
        if not isinstance(body, dict):
            return
        cap = self.token_cap(
            limits.settings, flow.metadata.get("flm.api.model"), flow.metadata.get("flm.auth.key")
        )
        if cap is None:
            return
        for field in TOKEN_FIELDS:
            value = body.get(field)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value > cap:
                flow.response = error_response(
                    400,
                    f"{field} must be an integer of at most {cap} here.",
                    code="max_tokens_exceeded",
                )
                return
        if flow.metadata.get("flm.api.kind") in CAPPED_KINDS and not any(
            field in body for field in TOKEN_FIELDS
        ):
            body["max_tokens"] = cap
            flow.request.content = json.dumps(body).encode()
