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

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from flm_gateway.config.route_settings import RouteConfig
from flm_gateway.core.errors import error_response
from flm_gateway.core.text import echo
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.proxy.addon_contract import NotConfigured
from flm_gateway.proxy.api_kind import ROUTED_KINDS
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    API_KIND,
    API_MODEL,
    EGRESS_FAILURES,
    ROUTE_ENGINE,
    ROUTE_FAILURES,
    ROUTE_PENDING,
    ROUTE_ROUTE,
)
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.routing.candidates import (
    Candidate,
    apply_candidate,
    fallback_model,
    unreachable_response,
)
from flm_gateway.routing.table import RoutingTable, route_fallbacks
from flm_gateway.routing.upstream import ProbeResult, probe

MISS_WAIT = 3.0


class Routing:
    def __init__(self) -> None:
        self._directory: EngineDirectory | None = None
        self._table = RoutingTable(())

    def prepare(self, runtime: Runtime) -> tuple[RoutingTable, EngineDirectory]:
        return RoutingTable(runtime.loaded.config.routes), runtime.directory

    def commit(self, prepared: tuple[RoutingTable, EngineDirectory]) -> None:
        self._table, self._directory = prepared

    async def candidates(self, model: str) -> tuple[RouteConfig | None, list[Candidate]]:
        directory = self._directory
        if directory is None:
            raise NotConfigured(self)
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
                for t in route_fallbacks(route)
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
        if flow.response is not None or API_KIND.get(flow) not in ROUTED_KINDS:
            return
        model: str = API_MODEL.require(flow)
        route, candidates = await self.candidates(model)
        if not candidates:
            flow.response = error_response(
                404, f"The model '{echo(model)}' does not exist.", code="model_not_found"
            )
            return
        ROUTE_ROUTE.set(flow, route)
        failures: list[tuple[str, ProbeResult]] = []
        ROUTE_FAILURES.set(flow, failures)
        for index, candidate in enumerate(candidates):
            result = await probe(flow, candidate.engine)
            if result is ProbeResult.OK:
                apply_candidate(flow, candidate, route)
                ROUTE_PENDING.set(flow, candidates[index + 1 :])
                return
            failures.append((candidate.engine.name, result))
        flow.response = unreachable_response(model, failures, EGRESS_FAILURES.get(flow))

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        engine = ROUTE_ENGINE.get(flow)
        if engine is not None and self._directory is not None and flow.server_conn.connected:
            state = self._directory.engines.get(engine)
            if state is not None:
                state.mark_connect_ok()

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        """mitmproxy's own connect to an engine failed (after a fresh probe): mark it down now,
        so the next request goes to a fallback instead of the same dead engine."""
        if self._directory is None or data.server.address is None:
            return
        for state in self._directory.engines.values():
            if (state.address.host, state.address.port) == tuple(data.server.address):
                state.mark_down(f"connect failed: {data.server.error or 'unknown error'}")
