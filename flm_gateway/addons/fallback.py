"""Retry a request on the next candidate engine when its engine answers 5xx before any byte.

Policy: on `responseheaders`, a 5xx from an engine while `flm.route.pending`
holds untried candidates marks the flow for fallback (so `streaming` leaves the
response buffered; the 5xx body is small). On `response`, each pending
candidate is probed and, if reachable, sent the request (rewritten for it by
`routing.apply_candidate`) through the engine's own HTTP session; the first
answer below 500 replaces the response. If all fail, the last 5xx stands.
Limitation: mitmproxy cannot restart a forwarded request, so this second
attempt is sent by the gateway and its answer arrives whole, not streamed.
Writes `flm.fallback.used` (names of the engines tried after the first); when a
fallback's answer replaces the 5xx, each engine that failed is recorded
(`outcomes.record_retried_failure`) and counted in `flm_upstream_errors_total`.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed
from flm_gateway.addons.routing import Candidate, apply_candidate
from flm_gateway.engines.base import EngineUnavailable
from flm_gateway.outcomes import record_retried_failure
from flm_gateway.upstream import ProbeResult, probe

log = logging.getLogger("flm_gateway.fallback")

_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade", "te"}
)


class Fallback:
    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if (
            flow.response is not None
            and flow.response.status_code >= 500
            and flow.metadata.get("flm.route.pending")
            and flow.server_conn.connected
        ):
            flow.metadata["flm.fallback.retry"] = True

    @fail_closed()
    async def response(self, flow: http.HTTPFlow) -> None:
        if not flow.metadata.pop("flm.fallback.retry", False) or flow.response is None:
            return
        pending: list[Candidate] = flow.metadata.get("flm.route.pending") or []
        route = flow.metadata.get("flm.route.route")
        tried: list[str] = []
        failed: list[tuple[str, str | int]] = [
            (flow.metadata.get("flm.route.engine") or "", flow.response.status_code)
        ]
        for candidate in pending:
            if await probe(flow, candidate.engine) is not ProbeResult.OK:
                continue
            apply_candidate(flow, candidate, route)
            tried.append(candidate.engine.name)
            headers = [
                (k, v)
                for k, v in flow.request.headers.items(multi=True)
                if k.lower() not in _HOP_HEADERS
            ]
            try:
                status, response_headers, body = await candidate.engine.client.send(
                    flow.request.method,
                    flow.request.url,
                    headers,
                    flow.request.get_content() or b"",
                    candidate.engine.config.timeouts.response,
                )
            except EngineUnavailable as exc:
                log.warning("fallback to engine %s failed: %s", candidate.engine.name, exc)
                failed.append((candidate.engine.name, "connect"))
                continue
            if status >= 500:
                failed.append((candidate.engine.name, status))
            else:
                kept = [
                    (k.encode(), v.encode())
                    for k, v in response_headers
                    if k.lower() not in _HOP_HEADERS
                ]
                flow.response = http.Response.make(status, body, kept)
                for engine, reason in failed:
                    record_retried_failure(flow, engine, reason)
                break
        flow.metadata["flm.fallback.used"] = tried
