"""Route an OpenAI API request to an engine by its `model`, with fallbacks.

Policy (on `request`, for flows `openai_api` classified with a model):
- Candidates come from `RoutingTable`: the first matching route's engines
  (the healthy ones in the route's `balance` order), then its fallbacks in order (a fallback
  given by bare name is asked for the route's upstream model if it serves it,
  else for the first model it lists; `{engine, upstream_model}` names it), the
  whole list ordered by health (healthy, degraded, unreachable), so a route
  whose engines are down goes straight to a healthy fallback; with no matching
  route, the engines that list the model (discovery; an unknown name triggers
  one rate-limited refresh of the model lists, awaited at most
  `MISS_WAIT` seconds). No candidate: 404 `model_not_found`.
- Each candidate is probed (`upstream.probe`); the first reachable one gets the
  request: model renamed to its `upstream_model`, route defaults and system
  prompt applied, client credentials replaced by the engine's key.
- None reachable: 504 `engine_timeout` when every failure was a timeout, else
  502 `engine_unavailable`, naming the engines tried and why, never their URLs
  or keys.
Writes `flm.route.engine`, `flm.route.route`, `flm.route.upstream_model`,
`flm.route.pending` (the untried candidates, for `failover`) and
`flm.route.failures` (engine name and probe result of each candidate that
could not be reached, for metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from flm_gateway.addons.guard import fail_closed
from flm_gateway.config.routes import RouteConfig
from flm_gateway.egress.failure import EgressFailure
from flm_gateway.engines.directory import EngineState
from flm_gateway.errors import error_response
from flm_gateway.proxy.api_kind import ROUTED_KINDS
from flm_gateway.request_rewrite import rewrite_form, rewrite_json
from flm_gateway.routing_table import RoutingTable
from flm_gateway.runtime import Runtime
from flm_gateway.text import echo
from flm_gateway.upstream import EGRESS_FAILURES_KEY, ProbeResult, point_at, probe

MISS_WAIT = 3.0


@dataclass(frozen=True)
class Candidate:
    engine: EngineState
    upstream_model: str


CLIENT_REQUEST_KEY = "flm.route.client_request"
"""flow.metadata: (path, content-type, body) as the client sent them (canonical path), kept
by the first `apply_candidate` so a retry rewrites the client's request, not the last one."""


def apply_candidate(flow: http.HTTPFlow, candidate: Candidate, route: RouteConfig | None) -> None:
    """Rewrite `flow` for `candidate`: body, path and credentials, always from the client's
    own request (a retry must not carry what the previous engine was sent)."""
    request = flow.request
    original = flow.metadata.get(CLIENT_REQUEST_KEY)
    if original is None:
        original = (request.path, request.headers.get("content-type"), request.raw_content)
        flow.metadata[CLIENT_REQUEST_KEY] = original
    else:
        _, content_type, content = original
        if content_type is not None:
            request.headers["content-type"] = content_type
        request.raw_content = content
        if "transfer-encoding" not in request.headers:
            request.headers["content-length"] = str(len(content or b""))
    kind = flow.metadata["flm.api.kind"]
    engine = candidate.engine
    body: dict[str, Any] | None = flow.metadata.get("flm.api.body")
    if body is not None:
        new_body = rewrite_json(body, route, candidate.upstream_model, kind)
        if new_body is not None:
            request.content = json.dumps(new_body).encode()
    elif candidate.upstream_model != flow.metadata["flm.api.model"]:
        request.headers["content-type"], request.content = rewrite_form(
            flow.metadata["flm.api.form"], candidate.upstream_model
        )
    suffix = original[0][len("/v1") :]
    point_at(flow, engine, engine.adapter.openai_prefix + suffix)
    flow.metadata["flm.route.upstream_model"] = candidate.upstream_model


def fallback_model(engine: EngineState, upstream: str) -> str:
    """The model a bare-name fallback engine is asked for: the route's upstream model when
    the engine serves it, else the first model the engine lists (else `upstream` unchanged)."""
    if engine.serves(upstream) or not engine.models:
        return upstream
    return next(iter(engine.models))


class Routing:
    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._table = RoutingTable(())

    def apply_runtime(self, runtime: Runtime) -> None:
        self._table = RoutingTable(runtime.loaded.config.routes)
        self._runtime = runtime

    async def candidates(self, model: str) -> tuple[RouteConfig | None, list[Candidate]]:
        assert self._runtime is not None
        directory = self._runtime.directory
        await directory.settled(MISS_WAIT)  # a request right after start waits for first checks
        route = self._table.match(model)
        if route is not None:
            upstream = route.upstream_model or model
            replicas = directory.ordered(
                route.engines, model, route.balance, dict(route.weighted_engines)
            )
            primary = [Candidate(e, upstream) for e in replicas]
            fallbacks = [
                Candidate(
                    directory.get(t.engine),
                    t.upstream_model or fallback_model(directory.get(t.engine), upstream),
                )
                for t in route.fallback_targets
                if t.engine not in route.engines
            ]
            # Healthy before degraded before unreachable; within a tier, the route's own
            # engines before its fallbacks (sorted() is stable). An engine that is down is not
            # dialled first on every request (a silent host would cost the connect timeout
            # each time); its checker is nudged instead, and brings it back when it answers.
            for candidate in primary:
                directory.nudge(candidate.engine)
            return route, sorted(primary + fallbacks, key=lambda c: c.engine.tier)
        names = directory.serving(model)
        if not names:
            refresh = directory.refresh_on_miss()
            if refresh is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(refresh), MISS_WAIT)
                names = directory.serving(model)
        return None, [Candidate(e, model) for e in directory.ordered(names, model)]

    @fail_closed()
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.metadata.get("flm.api.kind") not in ROUTED_KINDS:
            return
        model: str = flow.metadata["flm.api.model"]
        route, candidates = await self.candidates(model)
        if not candidates:
            flow.response = error_response(
                404, f"The model '{echo(model)}' does not exist.", code="model_not_found"
            )
            return
        flow.metadata["flm.route.route"] = route
        failures: list[tuple[str, ProbeResult]] = []
        flow.metadata["flm.route.failures"] = failures
        for index, candidate in enumerate(candidates):
            result = await probe(flow, candidate.engine)
            if result is ProbeResult.OK:
                apply_candidate(flow, candidate, route)
                flow.metadata["flm.route.pending"] = candidates[index + 1 :]
                return
            failures.append((candidate.engine.name, result))
        flow.response = unreachable_response(
            model, failures, flow.metadata.get(EGRESS_FAILURES_KEY)
        )

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        engine = flow.metadata.get("flm.route.engine")
        if engine is not None and self._runtime is not None and flow.server_conn.connected:
            state = self._runtime.directory.engines.get(engine)
            if state is not None:
                state.mark_connect_ok()

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        """mitmproxy's own connect to an engine failed (after a fresh probe): mark it down now,
        so the next request goes to a fallback instead of the same dead engine."""
        if self._runtime is None or data.server.address is None:
            return
        for state in self._runtime.directory.engines.values():
            if (state.address.host, state.address.port) == tuple(data.server.address):
                state.mark_down(f"connect failed: {data.server.error or 'unknown error'}")


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
