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
- `max_tokens` (on `request` for chat and completions, after `openai_api` checked
  the body's types, before routing): the cap is the smallest of the listener's
  `max_tokens`, the matched route's `max_tokens_per_route` entry and the key's own
  `max_tokens`, and it bounds the tokens of the whole request: tokens per choice
  times the choices (`n`, `best_of`). The route's `defaults` (typed and `extra`)
  count as if the client sent them (routing fills them in later, and only where the
  body leaves a field out). `budget_tokens` decides the one value the engine gets:
  - the client's own value (`max_tokens`, `max_completion_tokens` or llama.cpp's
    `n_predict`, which `openai_api` made agree): above the cap, or times the
    choices above it, 400 `max_tokens_exceeded` with `param`;
  - else min(the route default, cap // choices); a cap that leaves no token per
    choice is 400 too.
  The value is written to `max_tokens` (the one field every engine reads; Ollama
  reads no other) and to each other token field the client or route used, so no
  default can raise it later; the body is re-serialised if that changed it.
The cap itself is `security.token_caps.token_cap`, which `validate --effective` prints.
Reads `flm.api.body`, `flm.api.kind`, `flm.api.model`, `flm.auth.key`.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from flm_gateway.bodies import BodyError
from flm_gateway.bodies.schema import CHOICE_FIELDS, TOKEN_FIELDS
from flm_gateway.config.security_settings import RequestLimitSettings
from flm_gateway.core.errors import error_response
from flm_gateway.core.text import echo
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import API_BODY, API_KIND, API_MODEL, AUTH_KEY
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.routing.rewrite import with_defaults
from flm_gateway.routing.table import RoutingTable
from flm_gateway.security.policies import is_health_check, listener_name, per_listener
from flm_gateway.security.token_caps import CAPPED_KINDS, token_cap


@dataclass(frozen=True)
class _Limits:
    settings: RequestLimitSettings
    max_body: int


def budget_tokens(body: dict[str, Any], defaults: Mapping[str, Any], cap: int) -> bool:
    """Set the token fields of `body` to the final value under `cap`; True if that
    changed `body`. Raises BodyError (`max_tokens_exceeded`) when no value fits."""
    effective = with_defaults(body, defaults)
    choice_field = max(CHOICE_FIELDS, key=lambda field: effective.get(field) or 1)
    choices: int = effective.get(choice_field) or 1
    per_choice = cap // choices
    asked = next((field for field in TOKEN_FIELDS if field in body), None)
    if asked is not None:
        final: int = body[asked]
        if final > cap:
            raise BodyError(f"{asked} must be at most {cap} here.", "max_tokens_exceeded", asked)
        if final > per_choice:
            raise BodyError(
                f"{asked} ({final}) times {choice_field} ({choices}) must be at most {cap} "
                f"here: at most {per_choice} tokens per choice.",
                "max_tokens_exceeded",
                choice_field,
            )
    else:
        if per_choice < 1:
            raise BodyError(
                f"{choice_field} ({choices}) leaves no token per choice under the cap of {cap}.",
                "max_tokens_exceeded",
                choice_field,
            )
        default = next((effective[field] for field in TOKEN_FIELDS if field in effective), None)
        final = per_choice if default is None else min(default, per_choice)
    fields = ["max_tokens", *(field for field in TOKEN_FIELDS[1:] if field in effective)]
    changed = any(body.get(field) != final for field in fields)
    for field in fields:
        body[field] = final
    return changed


def _too_large(limit: int) -> http.Response:
    return error_response(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )


class RequestLimits:
    def __init__(self) -> None:
        self._limits: Mapping[str, _Limits] = {}
        self._routes = RoutingTable(())

    def prepare(self, runtime: Runtime) -> tuple[Mapping[str, _Limits], RoutingTable]:
        config = runtime.loaded.config
        server_limit = config.server.body_size_limit
        limits = {
            name: _Limits(
                security.request_limits,
                min(security.request_limits.max_body_size or server_limit, server_limit),
            )
            for name, security in per_listener(config).items()
        }
        return limits, RoutingTable(config.routes)

    def commit(self, prepared: tuple[Mapping[str, _Limits], RoutingTable]) -> None:
        self._limits, self._routes = prepared

    def _limits_for(self, flow: http.HTTPFlow) -> _Limits | None:
        """The limits of the flow's listener; None for an answered flow or a health check."""
        if flow.response is not None or is_health_check(flow):
            return None
        return self._limits.get(listener_name(flow) or "")

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        limits = self._limits_for(flow)
        if limits is None:
            return
        allowed = limits.settings.allowed_paths
        path = flow.request.path.split("?", 1)[0]
        if allowed is not None and not any(fnmatch.fnmatchcase(path, p) for p in allowed):
            flow.response = error_response(
                404, f"Unknown path '{echo(path)}' on this listener.", code="unknown_url"
            )
            return
        declared = flow.request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limits.max_body:
            flow.response = _too_large(limits.max_body)

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        limits = self._limits_for(flow)
        if limits is None:
            return
        if len(flow.request.raw_content or b"") > limits.max_body:
            flow.response = _too_large(limits.max_body)
            return
        body = API_BODY.get(flow)
        if not isinstance(body, dict) or API_KIND.get(flow) not in CAPPED_KINDS:
            return
        route = self._routes.match(API_MODEL.require(flow))
        cap = token_cap(limits.settings, route, AUTH_KEY.get(flow))
        if cap is None:
            return
        try:
            kind = API_KIND.require(flow)
            defaults = route.defaults.fields(kind) if route is not None else {}
            changed = budget_tokens(body, defaults, cap)
        except BodyError as error:
            flow.response = error_response(400, error.message, code=error.code, param=error.param)
            return
        if changed:
            flow.request.content = json.dumps(body).encode()
