"""Record every finished request in the Prometheus metrics.

Policy: never answers or changes a request. Requests the HTTP layer refused before
any flow existed (`flm_http_refused`, see `mitm_http1`) are counted by status and
reason. On `responseheaders` (after
`streaming` and any addon that set a chunk callable) a streamed response gets a
`StreamTap` in its chunk path, composed with whatever callable was there, to
time the first byte and count bytes. On `response` or `error`, whichever ends
the flow first, the flow is summarised once (`flm.summary`) and the summary is
counted; a flow is counted at most once (`flm.metrics.done`). A request re-sent by
`failover` after the head of a stream gets the tap on its new response.
Writes `flm.metrics.tap`, `flm.metrics.done`, `flm.summary`; reads what
`flow_summary` reads (including `flm.usage`, `flm.auth.key_id` and
`flm.security.rejected`). Recording failures are logged and never affect the
flow; like every hook, these run under `fail_closed`.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from flm_gateway.observability.flow_summary import StreamTap, summary_of
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import METRICS_DONE, METRICS_TAP
from flm_gateway.proxy.mitm_http1 import HttpRefusal

log = logging.getLogger("flm_gateway.metrics")


class Metrics(Unconfigured):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if (
            response is None
            or not response.stream
            or METRICS_TAP.get(flow) is response.stream  # tapped already
        ):
            return
        inner = response.stream if callable(response.stream) else None
        tap = StreamTap(inner)
        response.stream = tap
        METRICS_TAP.set(flow, tap)

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def flm_http_refused(self, refusal: HttpRefusal) -> None:
        """A request refused by the HTTP layer before any flow existed (`mitm_http1`)."""
        self.metrics.protocol_refusals.labels(str(refusal.status), refusal.reason).inc()

    def _finish(self, flow: http.HTTPFlow) -> None:
        if METRICS_DONE.get(flow):
            return
        METRICS_DONE.set(flow, True)
        try:
            self.metrics.observe(summary_of(flow))
        except Exception:  # metrics must never break serving
            log.exception("could not record metrics for a request")
