"""mitmproxy's own protocol errors, rendered in OpenAI's error shape.

mitmproxy answers some failures itself, without calling an addon first: a
request it cannot parse (400), a body over `body_size_limit` (413), the limits
of `mitm_http1` (400, 408, 413, 414, 431, 505), an upstream
connect that fails after our probe succeeded, or a broken upstream response
(502). It renders them as HTML naming hosts and ports. `install()` replaces that
renderer (`mitmproxy.proxy.layers.http._http1.make_error_response`, the only
one with HTTP/2 off) with ours: the same status, a generic message, JSON.
A test pins this internal name so an upgrade that moves it fails loudly.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import http1
from mitmproxy.proxy.layers.http import _http1

from flm_gateway.core.errors import error_body
from flm_gateway.egress.failure import failure_from_message

_MESSAGES = {
    400: ("The request is not valid HTTP.", "invalid_http"),
    408: ("The request was not received in time.", "request_timeout"),
    413: ("The request body is larger than this gateway accepts.", "request_too_large"),
    414: ("The request URL is longer than this gateway accepts.", "uri_too_long"),
    431: ("The request headers are larger than this gateway accepts.", "headers_too_large"),
    505: ("This gateway speaks HTTP/1.0 and HTTP/1.1 only.", "http_version_not_supported"),
    502: ("The engine could not be reached or sent an invalid response.", "engine_unavailable"),
}


def render_protocol_error(status_code: int, message: str = "") -> bytes:
    """An HTTP/1 response (bytes) with an OpenAI-shaped error for `status_code`.

    A failure of an egress (the CONNECT bridge's answer, or a direct dial refused
    by a fail-closed profile) keeps its own status and names the egress and reason.
    """
    failure = failure_from_message(message)
    if failure is not None:
        egress = failure.response()
        egress.headers["connection"] = "close"
        return bytes(http1.assemble_response(egress))
    text, code = _MESSAGES.get(
        status_code, ("The gateway could not complete the request.", "proxy_error")
    )
    response = http.Response.make(
        status_code,
        error_body(status_code, text, code=code),
        {"content-type": "application/json", "connection": "close"},
    )
    return bytes(http1.assemble_response(response))


def install() -> None:
    """Make mitmproxy render its own errors with `render_protocol_error`."""
    _http1.make_error_response = render_protocol_error
