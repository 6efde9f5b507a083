"""Candidates: the engines a request may go to, and the request rewritten for one of them.

Pure functions of a flow and the engine directory's state, shared by the `model_routing` addon
(the first choice), `failover` (the next ones) and `passthrough` (its one engine's 502);
`flm-gateway models list` names fallback models the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from flm_gateway.config.route_settings import RouteConfig
from flm_gateway.core.errors import error_response
from flm_gateway.core.text import echo
from flm_gateway.egress.failure import EgressFailure
from flm_gateway.engines.directory import EngineState
from flm_gateway.proxy.flow_meta import (
    API_BODY,
    API_FORM,
    API_KIND,
    API_MODEL,
    ROUTE_CLIENT_REQUEST,
    ROUTE_UPSTREAM_MODEL,
)
from flm_gateway.routing.rewrite import rewrite_form, rewrite_json
from flm_gateway.routing.upstream import ProbeResult, point_at


@dataclass(frozen=True)
class Candidate:
    engine: EngineState
    upstream_model: str


def apply_candidate(flow: http.HTTPFlow, candidate: Candidate, route: RouteConfig | None) -> None:
    """Rewrite `flow` for `candidate`: body, path and credentials, always from the client's
    own request (a retry must not carry what the previous engine was sent)."""
    request = flow.request
    original = ROUTE_CLIENT_REQUEST.get(flow)
    if original is None:
        original = (request.path, request.headers.get("content-type"), request.raw_content)
        ROUTE_CLIENT_REQUEST.set(flow, original)
    else:
        _, content_type, content = original
        if content_type is not None:
            request.headers["content-type"] = content_type
        request.raw_content = content
        if "transfer-encoding" not in request.headers:
            request.headers["content-length"] = str(len(content or b""))
    kind = API_KIND.require(flow)
    engine = candidate.engine
    body: dict[str, Any] | None = API_BODY.get(flow)
    if body is not None:
        new_body = rewrite_json(body, route, candidate.upstream_model, kind)
        if new_body is not None:
            request.content = json.dumps(new_body).encode()
    elif candidate.upstream_model != API_MODEL.require(flow):
        request.headers["content-type"], request.content = rewrite_form(
            API_FORM.require(flow), candidate.upstream_model
        )
    suffix = original[0][len("/v1") :]
    point_at(flow, engine, engine.adapter.openai_prefix + suffix)
    ROUTE_UPSTREAM_MODEL.set(flow, candidate.upstream_model)


def fallback_model(engine: EngineState, upstream: str) -> str:
    """The model a bare-name fallback engine is asked for: the route's upstream model when
    the engine serves it, else the first model the engine lists (else `upstream` unchanged)."""
    if engine.serves(upstream) or not engine.models:
        return upstream
    return next(iter(engine.models))


def unreachable_response(
    model: str,
    failures: list[tuple[str, ProbeResult]],
    egress: Mapping[str, EgressFailure] | None = None,
) -> http.Response:
    """502 (or 504 when every engine timed out) naming the engines tried.

    When every engine failed at its egress (`egress`: engine -> EgressFailure), the
    status and code are the egress failure's (503 for a proxy or Tor that is down) and
    the message names each egress and why it failed.
    """
    egress = egress or {}
    model = echo(model)
    reasons = "; ".join(
        f"engine {name!r}: {egress[name].client_message}"
        if name in egress
        else f"engine {name!r} "
        + ("timed out" if result is ProbeResult.TIMEOUT else "refused the connection")
        for name, result in failures
    )
    if failures and all(name in egress for name, _ in failures):
        first = egress[failures[0][0]]
        same = all(egress[name].reason is first.reason for name, _ in failures)
        return error_response(
            first.status if same else 502,
            f"No engine is reachable for model '{model}': {reasons}.",
            code=first.code if same else "egress_failed",
        )
    if all(result is ProbeResult.TIMEOUT for _, result in failures):
        return error_response(
            504,
            f"No engine answered in time for model '{model}': {reasons}.",
            code="engine_timeout",
        )
    return error_response(
        502, f"No engine is reachable for model '{model}': {reasons}.", code="engine_unavailable"
    )
