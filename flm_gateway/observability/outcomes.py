"""How a request ended: the one table of outcome and reason names.

The metrics (`flm_requests_total{status}`, `flm_upstream_errors_total{kind}`), the
request log (`status`, `error_kind`), the access log and `flm-gateway logs` all
describe a finished flow with the names defined here, through `flow_summary`; the
table in docs/operations.md lists the same names (a test compares them). The rules
that pick them from a finished flow are `flow_outcome`'s; this module imports nothing
heavy, so the CLI can use the names.

**Status.** A flow is recorded with the status its client received. mitmproxy ends
some flows with an error *and* an answer: a request body over `body_size_limit`
(413), a body refused by `mitm_http1` (408, 400, 413), an engine that could not be
reached, closed the connection or sent a broken response before any byte went to the
client (502, or an egress failure's own status); `flow_outcome.sent_status`
predicts that answer from the error (the `error` hook runs just before mitmproxy
sends it). A flow is
`aborted` only when no status line reached the client: the client went away, the
flow was killed, or its request broke off mid-body.

**Engine failures** (`UpstreamError`, the `kind` of `flm_upstream_errors_total`):
`probe_refused` / `probe_timeout` (the connect probe before forwarding), `connect`
(mitmproxy's own connect failed), `timeout` (no response headers within
`timeouts.response`, or a timeout reported by the connection), `disconnected` (the
connection closed before the response was complete: a dead keep-alive connection, a
stream cut mid-way), `invalid_response` (a response that is not valid HTTP or is over
`body_size_limit`), `http_5xx` (an engine answered 5xx), and `egress_<reason>` for a
SOCKS5/Tor egress that failed. A failure the failover retried is counted too, from
`flm.failover.failures` (`upstream_error` maps its reasons), except `stale`: a kept-alive
connection the engine had closed is no engine failure.
"""

from __future__ import annotations

import enum

ABORTED = "aborted"
"""The status label of a flow whose client received no status line."""

STALE = "stale"
"""The failover reason of a reused keep-alive connection the engine had closed."""


class UpstreamError(enum.StrEnum):
    """Why an engine failed a request (the `kind` label of `flm_upstream_errors_total`)."""

    PROBE_REFUSED = "probe_refused"
    PROBE_TIMEOUT = "probe_timeout"
    CONNECT = "connect"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"
    INVALID_RESPONSE = "invalid_response"
    HTTP_5XX = "http_5xx"


EGRESS_PREFIX = "egress_"
"""`egress_<reason>`: the other upstream error kinds, one per egress failure reason."""


class ErrorKind(enum.StrEnum):
    """The fixed `error_kind` names of the request log (besides error codes and statuses)."""

    CLIENT_DISCONNECTED = "client_disconnected"
    KILLED = "killed"
    TOO_LARGE = "too_large"
    PROTOCOL_ERROR = "protocol_error"
    INTERNAL_ERROR = "internal_error"
    UPSTREAM_CONNECT_FAILED = "upstream_connect_failed"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_DISCONNECTED = "upstream_disconnected"
    UPSTREAM_INVALID_RESPONSE = "upstream_invalid_response"


ERROR_KIND_OF_UPSTREAM = {
    UpstreamError.CONNECT: ErrorKind.UPSTREAM_CONNECT_FAILED,
    UpstreamError.TIMEOUT: ErrorKind.UPSTREAM_TIMEOUT,
    UpstreamError.DISCONNECTED: ErrorKind.UPSTREAM_DISCONNECTED,
    UpstreamError.INVALID_RESPONSE: ErrorKind.UPSTREAM_INVALID_RESPONSE,
}
"""The request's `error_kind` when the error that ended it was the engine's."""

_RETRY_CONDITIONS = {"5xx": UpstreamError.HTTP_5XX}


def status_label(status: int | None) -> str:
    """The status as metrics and logs show it: the code, or `aborted`."""
    return str(status) if status is not None else ABORTED


def upstream_error(reason: str | int) -> UpstreamError:
    """The upstream error for a failure the failover saw.

    `reason` is an HTTP status (5xx gives `http_5xx`), an `UpstreamError` or its value,
    or a failover reason (`connect`, `disconnected`, `timeout`, `5xx`). Raises ValueError for
    anything else (a 4xx is no engine failure).
    """
    if isinstance(reason, int):
        if 500 <= reason <= 599:
            return UpstreamError.HTTP_5XX
        raise ValueError(f"status {reason} is not an engine failure")
    return _RETRY_CONDITIONS.get(reason) or UpstreamError(reason)
