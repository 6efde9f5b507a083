"""The status a client received and the names of engine failures, from a finished flow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mitmproxy import flow as mflow
from mitmproxy import http

from flm_gateway.observability.flow_outcome import error_kind_of, sent_status, upstream_error_of
from flm_gateway.observability.flow_summary import summarize
from flm_gateway.observability.outcomes import (
    ABORTED,
    ErrorKind,
    UpstreamError,
    status_label,
    upstream_error,
)
from flm_gateway.proxy.flow_meta import FAILOVER_FAILURES
from flm_gateway.proxy.mitm_http1 import FLOW_REFUSALS
from tests.ops_flows import routed_flow

ROOT = Path(__file__).parents[1]


def failed(message: str, *, status: int | None = None, connected: bool = True) -> http.HTTPFlow:
    """A routed flow that ended with mitmproxy's error `message`."""
    flow = routed_flow(status=status)
    if not connected:
        flow.server_conn.timestamp_tcp_setup = None
    flow.error = mflow.Error(message)
    return flow


# (mitmproxy's message, engine reached, sent status, error kind, upstream error)
ERRORS = [
    ("Connect call failed ('127.0.0.1', 1)", False, 502, "upstream_connect_failed", "connect"),
    ("[Errno 111] Connection refused", False, 502, "upstream_connect_failed", "connect"),
    ("server closed connection", True, 502, "upstream_disconnected", "disconnected"),
    (
        "unexpected server response: b'HTTP/1.1 2'",
        True,
        502,
        "upstream_disconnected",
        "disconnected",
    ),
    (
        "HTTP/1 protocol error: peer closed connection without sending complete message body: "
        "incomplete chunked read",
        True,
        502,
        "upstream_disconnected",
        "disconnected",
    ),
    (
        "Cannot parse HTTP response: bad status",
        True,
        502,
        "upstream_invalid_response",
        "invalid_response",
    ),
    (
        "HTTP/1 protocol error: illegal chunk header",
        True,
        502,
        "upstream_invalid_response",
        "invalid_response",
    ),
    (
        "Response body exceeds mitmproxy's body_size_limit.",
        True,
        502,
        "upstream_invalid_response",
        "invalid_response",
    ),
    ("TimeoutError: timed out", True, 502, "upstream_timeout", "timeout"),
    ("Client disconnected.", True, None, "client_disconnected", None),
    ("killed", True, None, "killed", None),
]


@pytest.mark.parametrize(("message", "connected", "status", "kind", "upstream"), ERRORS)
def test_an_engine_failure_is_named_and_recorded_with_what_was_sent(
    message: str, connected: bool, status: int | None, kind: str, upstream: str | None
) -> None:
    flow = failed(message, connected=connected)
    assert sent_status(flow) == status
    assert error_kind_of(flow, "e1") == (kind, upstream)
    summary = summarize(flow)
    assert summary.status == status
    assert summary.upstream_errors == ((("e1", upstream),) if upstream else ())


def test_a_cut_stream_is_disconnected_and_keeps_the_status_the_client_saw() -> None:
    flow = failed(
        "HTTP/1 protocol error: peer closed connection without sending complete message body: "
        "incomplete chunked read",
        status=200,
    )
    assert flow.response is not None
    flow.response.stream = True  # the status line left with the first chunk
    summary = summarize(flow)
    assert summary.status == 200
    assert summary.error_kind == "upstream_disconnected"
    assert summary.upstream_errors == (("e1", "disconnected"),)


def test_a_request_over_the_body_limit_is_recorded_as_the_413_sent() -> None:
    flow = routed_flow(engine=None, status=None)
    flow.request.timestamp_end = None
    flow.error = mflow.Error("Request body exceeds mitmproxy's body_size_limit.")
    summary = summarize(flow)
    assert summary.status == 413
    assert summary.error_kind == "too_large"


@pytest.mark.parametrize(("reason", "status"), sorted(FLOW_REFUSALS.items()))
def test_a_body_refused_by_the_http_layer_is_recorded_with_its_status(
    reason: str, status: int
) -> None:
    flow = routed_flow(engine=None, status=None)
    flow.request.timestamp_end = None
    flow.error = mflow.Error(reason)
    assert summarize(flow).status == status


def test_a_request_that_broke_off_mid_body_is_aborted() -> None:
    flow = routed_flow(engine=None, status=None)
    flow.request.timestamp_end = None
    flow.error = mflow.Error("HTTP/1 protocol error: bad chunk")
    summary = summarize(flow)
    assert summary.status is None and status_label(summary.status) == ABORTED
    assert summary.error_kind == "protocol_error"


def test_an_egress_failure_is_recorded_with_the_egress_status() -> None:
    from flm_gateway.egress.failure import EgressFailure, Reason

    failure = EgressFailure("tor", "tor", Reason.TOR_NOT_BOOTSTRAPPED)
    flow = failed(failure.marker(), connected=False)
    assert sent_status(flow) == failure.status


def test_the_response_timeout_504_is_a_timeout() -> None:
    flow = routed_flow(
        status=504,
        body=b'{"error": {"message": "x", "type": "timeout_error", "code": "engine_timeout"}}',
        flm__upstream__timed_out=True,
    )
    summary = summarize(flow)
    assert summary.error_kind == "upstream_timeout"
    assert summary.upstream_errors == (("e1", "timeout"),)


def test_an_engine_error_code_that_is_a_number_is_not_an_error_kind() -> None:
    flow = routed_flow(status=500, body=b'{"error": {"code": "500", "message": "boom"}}')
    assert summarize(flow).error_kind == "upstream_500"
    flow = routed_flow(status=400, body=b'{"error": {"code": "context_length_exceeded"}}')
    assert summarize(flow).error_kind == "context_length_exceeded"


def test_failover_failures_are_counted_as_upstream_errors() -> None:
    """Each failure the failover retried is an upstream error, a stale keep-alive
    connection is not; the failure it gave up on is counted once."""
    flow = routed_flow(engine="e2")
    FAILOVER_FAILURES.set(
        flow,
        [
            ("e1", "5xx", "e0"),
            ("e0", "connect", "e3"),
            ("e3", "stale", "e3"),
            ("e3", "timeout", "e2"),
        ],
    )
    summary = summarize(flow)
    assert summary.upstream_errors == (("e1", "http_5xx"), ("e0", "connect"), ("e3", "timeout"))
    assert [why for _, why, _ in summary.retries] == ["5xx", "connect", "stale", "timeout"]
    given_up = routed_flow(engine="e1", status=503)
    FAILOVER_FAILURES.set(given_up, [("e1", "5xx", None)])
    assert summarize(given_up).upstream_errors == (("e1", "http_5xx"),)


@pytest.mark.parametrize("reason", [404, 200, "5XX", "refused", ""])
def test_a_reason_that_is_no_engine_failure_is_refused(reason: str | int) -> None:
    with pytest.raises(ValueError):
        upstream_error(reason)


def test_upstream_error_of_needs_no_response_to_name_a_connect_failure() -> None:
    assert upstream_error_of(failed("refused", connected=False)) is UpstreamError.CONNECT


def _documented(row_start: str) -> set[str]:
    doc = (ROOT / "docs" / "operations.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith(row_start))
    return set(re.findall(r"`([a-z0-9_<>]+)`", row.split("|")[-2]))


def test_the_upstream_error_kinds_are_the_ones_documented() -> None:
    documented = _documented("| `flm_upstream_errors_total`")
    fixed = {name for name in documented if not name.startswith("egress_")}
    assert fixed == {str(kind) for kind in UpstreamError}
    assert "egress_<reason>" in documented


def test_the_error_kinds_are_the_ones_documented() -> None:
    documented = _documented("| `error_kind`")
    assert {str(kind) for kind in ErrorKind} <= documented
