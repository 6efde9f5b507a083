"""The one ordered list of addons. mitmproxy calls hooks in this order for every flow.

Each entry says why it stands where it does. Security, TLS, egress and
operations addons slot in at the marked places as they land.
"""

from __future__ import annotations

from typing import Any

from flm_gateway.addons.fallback import Fallback
from flm_gateway.addons.health import Health
from flm_gateway.addons.inflight import Inflight
from flm_gateway.addons.listener_context import ListenerContext
from flm_gateway.addons.openai_api import OpenAIApi
from flm_gateway.addons.passthrough import Passthrough
from flm_gateway.addons.response_timeout import ResponseTimeout
from flm_gateway.addons.routing import Routing
from flm_gateway.addons.streaming import Streaming
from flm_gateway.addons.upstream_guard import UpstreamGuard


def build_addons(inflight: Inflight) -> list[Any]:
    """Our addons, in hook order (mitmproxy's own core addons are added before them)."""
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
        # Last on `request`: nothing undecided leaves; refuses dials to the placeholder.
        UpstreamGuard(),
        # Starts the response-header timer only for flows that really leave.
        ResponseTimeout(),
        # On `responseheaders`: marks a 5xx for fallback before streaming decides.
        Fallback(),
        # On `responseheaders`: streams SSE/NDJSON through unbuffered.
        Streaming(),
    ]
