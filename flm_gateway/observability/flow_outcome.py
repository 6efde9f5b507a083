"""The rules that name how a finished flow ended, in `outcomes`' names (see there).

Pure functions of a flow, called by `flow_summary` from the `response` or `error`
hook. They read mitmproxy's error messages (pinned by tests/test_flow_outcome.py),
`flm.upstream.timed_out` and the response's status.
"""

from __future__ import annotations

from mitmproxy import http

from flm_gateway.egress.failure import failure_from_message
from flm_gateway.observability.outcomes import ERROR_KIND_OF_UPSTREAM, ErrorKind, UpstreamError
from flm_gateway.proxy.flow_meta import METRICS_TAP, UPSTREAM_TIMED_OUT
from flm_gateway.proxy.mitm_http1 import FLOW_REFUSALS

# mitmproxy's messages for flows whose client gets no answer.
_CLIENT_GONE = ("client disconnected", "killed")
_REQUEST_TOO_LARGE = "request body exceeds mitmproxy's body_size_limit"
# mitmproxy's messages for a connection that closed before the response was complete:
# h11's "peer closed connection without sending complete message body" (mid-body),
# "server closed connection" (before any byte), "unexpected server response" (mid-head).
_CUT = ("peer closed connection", "server closed connection", "unexpected server response")
_INVALID = ("cannot parse", "protocol error", "smuggling", "response body exceeds")


def _client_saw_headers(flow: http.HTTPFlow) -> bool:
    """A streamed response's status line leaves right after `responseheaders`."""
    response = flow.response
    return response is not None and (
        bool(response.stream) or METRICS_TAP.is_set(flow)  # the metrics addon's tap
    )


def sent_status(flow: http.HTTPFlow) -> int | None:
    """The status the client received (or is about to receive, from the `error` hook)."""
    response = flow.response
    if flow.error is None:
        return response.status_code if response is not None else None
    if _client_saw_headers(flow):
        if response is None:
            raise ValueError("the client saw headers of a flow without a response")
        return response.status_code
    message = flow.error.msg
    lowered = message.lower()
    if any(gone in lowered for gone in _CLIENT_GONE):
        return None
    if _REQUEST_TOO_LARGE in lowered:
        return 413
    refused = FLOW_REFUSALS.get(message)
    if refused is not None:
        return refused
    if flow.request.timestamp_end is None:
        return None  # the request broke off mid-body: mitmproxy closes without an answer
    # Everything else is a failure on the engine's side: mitmproxy answers it
    # (`mitm_errors.render_protocol_error`, which gives an egress failure its status).
    failure = failure_from_message(message)
    return failure.status if failure is not None else 502


def upstream_error_of(flow: http.HTTPFlow) -> UpstreamError:
    """The engine's failure behind `flow.error` (for a flow that was routed to an engine)."""
    if flow.error is None:
        raise ValueError("upstream_error_of needs a flow that ended with an error")
    message = flow.error.msg.lower()
    if "timed out" in message or "timeout" in message:
        return UpstreamError.TIMEOUT
    if flow.response is None and flow.server_conn.timestamp_tcp_setup is None:
        return UpstreamError.CONNECT
    if any(cut in message for cut in _CUT):
        return UpstreamError.DISCONNECTED
    if any(invalid in message for invalid in _INVALID):
        return UpstreamError.INVALID_RESPONSE
    return UpstreamError.DISCONNECTED


def error_kind_of(flow: http.HTTPFlow, engine: str | None) -> tuple[str, UpstreamError | None]:
    """(error kind, upstream error or None) for a flow that ended with `flow.error`."""
    if flow.error is None:
        raise ValueError("error_kind_of needs a flow that ended with an error")
    message = flow.error.msg.lower()
    if "client disconnected" in message:
        return ErrorKind.CLIENT_DISCONNECTED, None
    if "killed" in message:
        return ErrorKind.KILLED, None
    if "body_size_limit" in message and "request" in message:
        return ErrorKind.TOO_LARGE, None
    if engine is None or flow.request.timestamp_end is None:
        return ErrorKind.PROTOCOL_ERROR, None
    upstream = upstream_error_of(flow)
    return ERROR_KIND_OF_UPSTREAM[upstream], upstream


def engine_error_kind(flow: http.HTTPFlow, code: str | None) -> tuple[str, UpstreamError | None]:
    """(error kind, upstream error or None) for an engine's answer of status >= 400.

    The error kind is the engine's own error `code` when it gave a word (digits are a
    status, not a code), else `upstream_<status>`; the response timeout's 504 is a
    `timeout`.
    """
    if flow.response is None:
        raise ValueError("an engine answer needs a response")
    status = flow.response.status_code
    if UPSTREAM_TIMED_OUT.get(flow):
        return ErrorKind.UPSTREAM_TIMEOUT, UpstreamError.TIMEOUT
    kind = code if code and not code.isdigit() else f"upstream_{status}"
    return kind, UpstreamError.HTTP_5XX if status >= 500 else None
