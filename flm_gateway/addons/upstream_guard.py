"""The last check before anything leaves the gateway: no route, no upstream connection.

Policy: on `request` (last in the chain), a flow with neither a response nor a
chosen engine (`flm.route.engine`) is answered 500: some addon failed to decide,
and an undecided flow is never forwarded. On `server_connect`, a connection to
the listeners' placeholder target (see `flm_gateway.proxy.mitm_listeners`) is refused.
"""

from __future__ import annotations

import logging

from mitmproxy import http
from mitmproxy.proxy import server_hooks

from flm_gateway.core.errors import error_response
from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import ROUTE_ENGINE
from flm_gateway.proxy.mitm_listeners import PLACEHOLDER_TARGET

log = logging.getLogger("flm_gateway.addons")


class UpstreamGuard(Unconfigured):
    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None and not ROUTE_ENGINE.is_set(flow):
            log.error("refusing unrouted flow %s %s", flow.request.method, flow.request.path)
            flow.response = error_response(
                500, "The gateway could not route this request.", code="unrouted"
            )

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.address == PLACEHOLDER_TARGET:
            data.server.error = "refused: no engine was chosen for this request"
