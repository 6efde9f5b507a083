"""Send a request that failed before its answer began to the next candidate engine.

Policy (routed API calls; the stream side is `mitm_failover`):
- On `request` (right after routing chose the first engine): the flow may fail over
  on `connect` and `disconnected` always (so a dead engine gets a clear answer), and
  on the route's `retries.when` conditions when `retries.attempts` > 1
  (`flm.failover.possible`). The engine's in-flight count (balance: least_busy) and
  the time the request left start here.
- On `flm_failover` (an engine failed before the first byte reached the client):
  - the failure counts against the engine (passive health, latency), except a
    reused keep-alive connection that closed before answering: that is a stale
    connection, retried once on the same engine without counting;
  - the next candidate is the next of the route's engines and fallbacks not tried
    yet, healthiest first (`flm.route.pending`); with a `retries.backoff`, once all
    were tried, those that answered 5xx, timed out or disconnected are tried again;
    at most `retries.attempts` tries in all, each after `backoff * 2**n` seconds;
  - a retry rewrites the request for that engine (`routing.apply_candidate`) and
    sets `flm.failover.resend`; the addons after this one redo their per-engine work
    in their own `flm_failover` hooks;
  - when no retry is left: a held 5xx or timeout answer stands as the engine sent
    it; a connect or disconnect failure is answered 502 `engine_unavailable` naming
    each engine tried and how it failed (an egress failure keeps its own answer),
    never a URL.
- On `responseheaders`: an engine's answer head below 500 resets its failure count
  and is a latency sample; a 5xx that was not retried counts as a failure.
Writes `flm.failover.failures`: (engine, reason, next engine or None) per failure,
for metrics (retries and failovers by reason) and the request log.
"""

from __future__ import annotations

import asyncio
import time

from mitmproxy import http

from flm_gateway.config.route_settings import RetrySettings
from flm_gateway.core.errors import error_response
from flm_gateway.core.text import echo
from flm_gateway.egress.failure import failure_from_message
from flm_gateway.engines.directory import EngineState
from flm_gateway.observability.outcomes import STALE
from flm_gateway.proxy.addon_contract import ReadsEngines
from flm_gateway.proxy.api_kind import ROUTED_KINDS
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    API_KIND,
    API_MODEL,
    FAILOVER_AGAIN,
    FAILOVER_ATTEMPT,
    FAILOVER_ERROR,
    FAILOVER_FAILURES,
    FAILOVER_HOLD_TIMEOUT,
    FAILOVER_IN_FLIGHT,
    FAILOVER_POSSIBLE,
    FAILOVER_REASON,
    FAILOVER_RESEND,
    FAILOVER_REUSED,
    FAILOVER_SENT_AT,
    FAILOVER_STALE_RETRIED,
    FAILOVER_TRIED,
    FAILOVER_UNDO_SUCCESS,
    ROUTE_ENGINE,
    ROUTE_PENDING,
    ROUTE_ROUTE,
    ROUTE_UPSTREAM_MODEL,
    UPSTREAM_ANSWERED,
)
from flm_gateway.proxy.mitm_failover import (
    CONNECT,
    DISCONNECTED,
    HTTP_5XX,
    TIMEOUT,
)
from flm_gateway.routing.candidates import Candidate, apply_candidate

_TRANSIENT = (HTTP_5XX, TIMEOUT, DISCONNECTED)
MAX_BACKOFF = 30.0
"""Longest wait before one retry, whatever the doubling reaches."""

_HOW = {
    CONNECT: "could not be connected to",
    DISCONNECTED: "closed the connection before answering",
    HTTP_5XX: "answered with a server error",
    TIMEOUT: "did not answer in time",
}


def retries_of(flow: http.HTTPFlow) -> RetrySettings:
    route = ROUTE_ROUTE.get(flow)
    return route.retries if route is not None else RetrySettings()


class Failover(ReadsEngines):
    def _engine(self, name: str | None) -> EngineState | None:
        if self._directory is None or name is None:
            return None
        return self._directory.engines.get(name)

    # ---- in flight ---------------------------------------------------------------

    def _start(self, flow: http.HTTPFlow, engine: EngineState) -> None:
        self._finish(flow)
        engine.in_flight += 1
        FAILOVER_IN_FLIGHT.set(flow, engine)
        FAILOVER_SENT_AT.set(flow, time.monotonic())
        FAILOVER_HOLD_TIMEOUT.set(flow, engine.config.timeouts.response)

    def _finish(self, flow: http.HTTPFlow) -> None:
        engine: EngineState | None = FAILOVER_IN_FLIGHT.pop(flow)
        if engine is not None:
            engine.in_flight = max(0, engine.in_flight - 1)

    # ---- hooks -------------------------------------------------------------------

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        engine = self._engine(ROUTE_ENGINE.get(flow))
        if flow.response is not None or engine is None or API_KIND.get(flow) not in ROUTED_KINDS:
            return
        retries = retries_of(flow)
        possible = {CONNECT, DISCONNECTED}
        if retries.attempts > 1:
            possible.update(condition.value for condition in retries.when)
        FAILOVER_POSSIBLE.set(flow, frozenset(possible))
        FAILOVER_TRIED.set(flow, [Candidate(engine, ROUTE_UPSTREAM_MODEL.require(flow))])
        FAILOVER_ATTEMPT.set(flow, 1)
        self._start(flow, engine)

    @fail_closed()
    async def flm_failover(self, flow: http.HTTPFlow) -> None:
        reason: str = FAILOVER_REASON.require(flow)
        engine = self._engine(ROUTE_ENGINE.get(flow))
        if engine is None:
            return
        stale = reason == DISCONNECTED and bool(FAILOVER_REUSED.get(flow))
        undo = FAILOVER_UNDO_SUCCESS.pop(flow)
        if undo is not None and undo[0] is engine:  # its head came, its first event did not
            engine.failures, engine.latency, engine.down_until = undo[1:]
        self._finish(flow)
        if not stale:
            engine.record_failure(reason)
        UPSTREAM_ANSWERED.pop(flow)  # counted here, not again on responseheaders
        following = self._next(flow, engine, reason, stale)
        failures: list[tuple[str, str, str | None]] = FAILOVER_FAILURES.setdefault(flow, [])
        failures.append(
            (engine.name, STALE if stale else reason, following.engine.name if following else None)
        )
        if following is None:
            self._give_up(flow, reason)
            return
        retry = len(FAILOVER_TRIED.require(flow)) - 1
        backoff = retries_of(flow).backoff
        if backoff and not stale:
            await asyncio.sleep(min(MAX_BACKOFF, backoff * 2**retry))
        if following.engine is not engine:
            apply_candidate(flow, following, ROUTE_ROUTE.get(flow))
        if not stale:
            FAILOVER_TRIED.require(flow).append(following)
        FAILOVER_ATTEMPT.set(flow, FAILOVER_ATTEMPT.get(flow, 1) + 1)
        FAILOVER_RESEND.set(flow, True)
        self._start(flow, following.engine)

    def _next(
        self, flow: http.HTTPFlow, engine: EngineState, reason: str, stale: bool
    ) -> Candidate | None:
        """The candidate to send the request to now, or None to give up."""
        if stale and not FAILOVER_STALE_RETRIED.get(flow):
            FAILOVER_STALE_RETRIED.set(flow, True)
            return Candidate(engine, ROUTE_UPSTREAM_MODEL.require(flow))
        retries = retries_of(flow)
        tried: list[Candidate] = FAILOVER_TRIED.require(flow)
        if reason not in retries.when or len(tried) >= retries.attempts:
            return None
        pending: list[Candidate] = ROUTE_PENDING.get(flow) or []
        if pending:
            pending.sort(key=lambda candidate: candidate.engine.tier)  # stable: route order
            ROUTE_PENDING.set(flow, pending[1:])
            return pending[0]
        if not retries.backoff:
            return None
        again: list[Candidate] | None = FAILOVER_AGAIN.get(flow)
        if again is None:
            failed = FAILOVER_FAILURES.get(flow) or ()
            transient = {name for name, why, _ in failed if why in _TRANSIENT}
            if reason in _TRANSIENT:
                transient.add(engine.name)
            seen: set[str] = set()
            again = []
            for candidate in tried:
                if candidate.engine.name in transient and candidate.engine.name not in seen:
                    seen.add(candidate.engine.name)
                    again.append(candidate)
        if not again:
            return None
        FAILOVER_AGAIN.set(flow, again[1:] + again[:1])  # round after round
        return again[0]

    def _give_up(self, flow: http.HTTPFlow, reason: str) -> None:
        """No retry left: a held 5xx or timeout stands; else a clear 502 (or the egress's)."""
        if reason in (HTTP_5XX, TIMEOUT):
            return
        egress = failure_from_message(FAILOVER_ERROR.get(flow) or "")
        if egress is not None:
            flow.response = egress.response()
            return
        model = echo(str(API_MODEL.get(flow, "")))
        how = "; ".join(
            f"engine {name!r} {_HOW.get(why, why)}"
            for name, why, _ in FAILOVER_FAILURES.get(flow) or ()
        )
        flow.response = error_response(
            502,
            f"No engine could answer for model '{model}': {how}.",
            code="engine_unavailable",
        )

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is None or not UPSTREAM_ANSWERED.pop(flow, False):
            return
        engine: EngineState | None = FAILOVER_IN_FLIGHT.get(flow)
        if engine is None:
            return
        if flow.response.status_code >= 500:
            engine.record_failure(HTTP_5XX)
        else:
            # A stream's head is held until its first event (`mitm_failover`): should the
            # engine die before it, `flm_failover` takes this success back.
            FAILOVER_UNDO_SUCCESS.set(
                flow, (engine, engine.failures, engine.latency, engine.down_until)
            )
            engine.record_success(time.monotonic() - FAILOVER_SENT_AT.get(flow, time.monotonic()))

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)
