"""Tag every flow with its listener, a request id and the client address.

Policy: runs first on `requestheaders`. Writes `flm.listener` (the
`ListenerConfig`), `flm.request_id` (the client's `X-Request-ID` when it is a
sane token of at most 128 characters, else a new random id) and `flm.client_ip`.
Every response, streamed or not, carries `X-Request-ID`. A flow whose listener
cannot be found (a listener removed by a reload while its connection lives on)
is answered 503 with `Connection: close`: it has no policy to be judged by, so
it is not forwarded, and the client's next attempt opens a new connection.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

from mitmproxy import http

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.core.errors import error_response
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import CLIENT_IP, LISTENER, REQUEST_ID
from flm_gateway.proxy.mitm_listeners import listener_of
from flm_gateway.proxy.runtime import Runtime

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class ListenerContext:
    def __init__(self) -> None:
        self._listeners: Mapping[str, ListenerConfig] = {}
        """By mode spec; empty until the first commit, when every flow has no listener."""

    def prepare(self, runtime: Runtime) -> Mapping[str, ListenerConfig]:
        return runtime.listeners

    def commit(self, prepared: Mapping[str, ListenerConfig]) -> None:
        self._listeners = prepared

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        offered = flow.request.headers.get("x-request-id", "")
        request_id = offered if _REQUEST_ID_RE.match(offered) else secrets.token_hex(12)
        REQUEST_ID.set(flow, request_id)
        CLIENT_IP.set(flow, flow.client_conn.peername[0])
        listener = listener_of(self._listeners, flow.client_conn)
        if listener is None:
            LISTENER.set(flow, None)
            return
        LISTENER.set(flow, listener)

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and LISTENER.get(flow) is None:
            # Connection: close, so a keep-alive client reconnects instead of retrying here.
            flow.response = error_response(
                503,
                "This listener is being reconfigured; retry.",
                code="listener_unavailable",
                headers={"connection": "close"},
            )

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and REQUEST_ID.is_set(flow):
            flow.response.headers["x-request-id"] = REQUEST_ID.require(flow)
