"""The one ordered list of addons. mitmproxy calls hooks in this order for every flow.

Each entry says why it stands where it does. Security, TLS, egress and
operations addons slot in at the marked places as they land.
"""

from __future__ import annotations

from typing import Any

from flm_gateway.addons.egress import Egress
from flm_gateway.addons.fallback import Fallback
from flm_gateway.addons.health import Health
from flm_gateway.addons.inflight import Inflight
from flm_gateway.addons.listener_context import ListenerContext
from flm_gateway.addons.metrics import Metrics
from flm_gateway.addons.openai_api import OpenAIApi
from flm_gateway.addons.passthrough import Passthrough
from flm_gateway.addons.request_log import RequestLog
from flm_gateway.addons.response_timeout import ResponseTimeout
from flm_gateway.addons.routing import Routing
from flm_gateway.addons.streaming import Streaming
from flm_gateway.addons.token_accounting import TokenAccounting
from flm_gateway.addons.upstream_guard import UpstreamGuard
from flm_gateway.metrics import GatewayMetrics


def build_addons(
    inflight: Inflight, egress: Egress | None = None, metrics: GatewayMetrics | None = None
) -> list[Any]:
    """Our addons, in hook order (mitmproxy's own core addons are added before them).

    `egress` is the gateway's egress addon (it owns the EgressService that the engine
    directory dials through); `metrics` is the gateway's metrics registry. Fresh ones
    are made when not given (tests).
    """
    metrics = metrics or GatewayMetrics()
    return [
        # Counts every flow from its first byte, so drain waits for all of them.
        inflight,
        # Tags the flow with listener, request id and client IP: everything below reads them.
        ListenerContext(),
        # Liveness/readiness: answered before any policy, never need a key.
        Health(),
        # Drop-in fronting: takes over whole listeners before the OpenAI API parses anything.
        Passthrough(),
        # Classifies the path, validates the body, answers /v1/models and unknown paths.
        OpenAIApi(),
        # Picks the engine (probe, fallbacks) and rewrites the request for it.
        Routing(),
        # After routing chose the engine: its egress (SOCKS/Tor via the CONNECT bridge);
        # on server_connect, refuses direct dials to engines of fail-closed proxies.
        egress if egress is not None else Egress(),
        # Last on `request`: nothing undecided leaves; refuses dials to the placeholder.
        UpstreamGuard(),
        # Starts the response-header timer only for flows that really leave.
        ResponseTimeout(),
        # On `responseheaders`: marks a 5xx for fallback before streaming decides.
        Fallback(),
        # On `responseheaders`: streams SSE/NDJSON through unbuffered.
        Streaming(),
        # After `streaming` (it replaces the `stream = True` set there by its counting
        # callable) and after `fallback` (whose `response` may replace the answer it counts);
        # its `request` hook runs after routing chose the engine (it asks that engine for
        # stream usage). Writes `flm.usage`: addons that read it (rate limits on tokens,
        # metrics, request log) go below.
        TokenAccounting(),
        # Observers, last on every hook: they see the final response (after fallback and
        # token accounting) and tap a stream only once `streaming` and any chunk rewriter
        # set it up. They never change a flow.
        Metrics(metrics),
        # Reads the summary the metrics addon made; writes off the event loop.
        RequestLog(metrics),
    ]
