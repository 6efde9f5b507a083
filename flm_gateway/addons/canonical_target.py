"""One canonical request target per flow, decided once, before any policy reads the path.

Policy (on `requestheaders`, on every listener, OpenAI and passthrough alike): the
request target is replaced by its canonical form (`security.target.canonical_target`:
unreserved escapes decoded once, other escapes upper-cased, repeated slashes and dot
segments resolved), and an absolute-form target (`GET http://host/path`) becomes
origin-form (the gateway routes by listener, never by the authority). Every later
policy (CORS, auth and its health exemption, the OpenAI path match, passthrough's
admin routes, `allowed_paths`, routing) and the engine itself then read the same
path, the one the engine decodes. A target that cannot be canonicalised without
guessing (encoded `/`, `\\`, `%` or dot segment, NUL and other controls, `;`,
malformed escapes, invalid UTF-8, a fragment, `*`) is answered 400
`invalid_path`. Refusals record `path.refused` (severity low, no offence: the
intrusion rules already count traversal spellings as offences) and set
`flm.security.rejected` = `invalid_path`. The target's length is not checked here:
the HTTP layer bounds it before any addon runs (`server.limits.max_url_length`).

It stands after `honeypot` and `intrusion`: they see the target exactly as the client
sent it (they decode it their own, more aggressive way), so a scanner's traversal is
still caught, decoyed and counted towards auto-block before it is refused here.
Fails closed. Writes `flm.target.original` (the client's target, when it changed).
"""

from __future__ import annotations

from mitmproxy import http

from flm_gateway.core.errors import error_response
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import SECURITY_REJECTED, TARGET_ORIGINAL
from flm_gateway.security.events import record
from flm_gateway.security.target import (
    EXPLANATIONS,
    TargetRefused,
    canonical_target,
)


class CanonicalTarget(Unconfigured):
    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        request = flow.request
        target = request.path
        try:
            canonical = canonical_target(target)
        except TargetRefused as refused:
            SECURITY_REJECTED.set(flow, "invalid_path")
            record(
                flow,
                "path.refused",
                Severity.LOW,
                reason=refused.reason.value,
                method=request.method,
                path=target.partition("?")[0][:200],
            )
            flow.response = error_response(400, EXPLANATIONS[refused.reason], code="invalid_path")
            return
        if request.data.authority and not (request.is_http2 or request.is_http3):
            request.authority = ""  # absolute-form: forward origin-form
        if canonical != target:
            TARGET_ORIGINAL.set(flow, target)
            request.path = canonical
