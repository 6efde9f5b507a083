"""Stream event streams through, chunk by chunk; never buffer them.

Policy: on `responseheaders`, a response whose content type is
`text/event-stream` (OpenAI SSE) or `application/x-ndjson` (Ollama's native
streams) is streamed: each chunk goes to the client as it arrives. Other
responses are buffered (they are single JSON documents, capped by
`body_size_limit`). An error answer (status >= 400, even as an event stream) stays
buffered: it is small, and `engine_errors` rewrites it whole into OpenAI's error shape.
A 5xx a retry may replace never gets here: `mitm_failover` holds it before the response
hooks run, so a retried answer streams too. Writes `flm.streamed`.
"""

from __future__ import annotations

from mitmproxy import http

from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import STREAMED

STREAM_TYPES = ("text/event-stream", "application/x-ndjson")


class Streaming(Unconfigured):
    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.status_code >= 400:
            return
        content_type = response.headers.get("content-type", "").lower()
        if content_type.startswith(STREAM_TYPES) and not response.stream:
            response.stream = True
            STREAMED.set(flow, True)
