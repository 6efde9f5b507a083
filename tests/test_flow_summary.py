from __future__ import annotations

from mitmproxy import flow as mflow
from mitmproxy import http

from flm_gateway.observability.flow_summary import StreamTap, summarize, summary_of
from flm_gateway.proxy.flow_meta import METRICS_TAP, SUMMARY
from tests.ops_flows import routed_flow


def test_summary_of_a_routed_request() -> None:
    flow = routed_flow(
        route="m*",
        flm__auth__key_id="key-1",
        flm__usage={"prompt_tokens": 11, "completion_tokens": 5, "estimated": True},
    )
    summary = summarize(flow)
    assert summary.listener == "main"
    assert summary.client_ip == "192.0.2.7"
    assert summary.request_id == "req-1"
    assert summary.path == "/v1/chat/completions"  # the query string (with a secret) is gone
    assert (summary.model, summary.engine, summary.route) == ("m1", "e1", "m*")
    assert summary.status == 200
    assert summary.latency == 0.5
    assert summary.ttft is None and not summary.streamed
    assert (summary.prompt_tokens, summary.completion_tokens, summary.tokens_estimated) == (
        11,
        5,
        True,
    )
    assert summary.key_id == "key-1"
    assert summary.bytes_in == len(b'{"model": "m1"}')
    assert summary.bytes_out == len(b'{"ok": true}')
    assert summary.error_kind is None and summary.upstream_errors == ()


def test_summary_is_computed_once() -> None:
    flow = routed_flow()
    first = summary_of(flow)
    assert summary_of(flow) is first
    assert SUMMARY.require(flow) is first


def test_local_error_uses_the_openai_error_code() -> None:
    flow = routed_flow(
        engine=None,
        status=404,
        body=b'{"error": {"message": "x", "type": "not_found_error", "code": "model_not_found"}}',
    )
    summary = summarize(flow)
    assert summary.error_kind == "model_not_found"
    assert summary.upstream_errors == ()


def test_engine_5xx_counts_as_an_upstream_error() -> None:
    flow = routed_flow(status=503, body=b"overloaded")
    summary = summarize(flow)
    assert summary.error_kind == "upstream_503"
    assert summary.upstream_errors == (("e1", "http_5xx"),)


def test_probe_failures_before_the_chosen_engine_are_reported() -> None:
    flow = routed_flow(flm__route__failures=[("e0", "refused"), ("e9", "timeout")])
    assert summarize(flow).upstream_errors == (("e0", "probe_refused"), ("e9", "probe_timeout"))


def test_connect_failure_is_recorded_with_the_502_mitmproxy_sends() -> None:
    flow = routed_flow(status=None)
    flow.server_conn.timestamp_tcp_setup = None
    flow.error = mflow.Error("Connect call failed ('127.0.0.1', 1)")
    summary = summarize(flow)
    assert summary.status == 502
    assert summary.error_kind == "upstream_connect_failed"
    assert summary.upstream_errors == (("e1", "connect"),)


def test_client_disconnect_is_not_an_engine_error() -> None:
    flow = routed_flow(status=None)
    flow.error = mflow.Error("Client disconnected.")
    summary = summarize(flow)
    assert summary.error_kind == "client_disconnected"
    assert summary.upstream_errors == ()


def test_security_rejection_is_recorded() -> None:
    flow = routed_flow(
        engine=None, status=429, body=b"", flm__security__rejected="rate_limit_requests"
    )
    summary = summarize(flow)
    assert summary.rejected == "rate_limit_requests"
    assert summary.error_kind == "http_429"


def test_stream_tap_times_the_first_chunk_and_counts_bytes() -> None:
    tap = StreamTap()
    assert tap(b"") == b""
    assert tap.first_chunk_at is None
    assert tap(b"data: 1\n\n") == b"data: 1\n\n"
    assert tap.first_chunk_at is not None
    tap(b"data: 2\n\n")
    assert tap.bytes_out == 18


def test_stream_tap_composes_with_an_existing_callable() -> None:
    tap = StreamTap(lambda chunk: [chunk.upper(), b"!"])
    assert tap(b"ab") == [b"AB", b"!"]
    assert tap.bytes_out == 3


def test_streamed_summary_has_ttft_and_tapped_bytes() -> None:
    flow = routed_flow(started=1000.0, ended=1002.0)
    tap = StreamTap()
    tap(b"xyz")
    tap.first_chunk_at = 1000.25
    METRICS_TAP.set(flow, tap)
    assert isinstance(flow.response, http.Response)
    summary = summarize(flow)
    assert summary.streamed
    assert summary.ttft == 0.25
    assert summary.bytes_out == 3


def test_a_stream_cut_midway_keeps_its_status_and_says_why() -> None:
    flow = routed_flow()
    tap = StreamTap()
    tap(b"data: 1\n\n")
    METRICS_TAP.set(flow, tap)
    flow.error = mflow.Error("server closed connection")
    summary = summarize(flow)
    assert summary.status == 200
    assert summary.error_kind == "upstream_disconnected"
    assert summary.upstream_errors == (("e1", "disconnected"),)


def test_long_client_strings_are_clipped() -> None:
    flow = routed_flow(model="x" * 1000)
    assert len(summarize(flow).model or "") == 200


def test_egress_failures_are_named_by_their_reason() -> None:
    from flm_gateway.egress.failure import EgressFailure, Reason

    tor = EgressFailure("tor", "tor", Reason.TOR_NOT_BOOTSTRAPPED)
    direct = EgressFailure("direct", "direct", Reason.TARGET_REFUSED)
    flow = routed_flow(
        status=503,
        body=b"",
        flm__route__failures=[("e0", "refused"), ("e9", "refused")],
        flm__egress__failures={"e0": tor, "e9": direct},
        flm__egress__failure=EgressFailure("tor", "tor", Reason.TIMEOUT),
    )
    assert summarize(flow).upstream_errors == (
        ("e0", "egress_tor_not_bootstrapped"),
        ("e9", "probe_refused"),
        ("e1", "egress_timeout"),
    )


def test_rejection_reasons_from_the_security_addons() -> None:
    from flm_gateway.core.severity import Severity
    from flm_gateway.security.events import SecurityEvent

    def rejected(status: int, **metadata: object) -> str | None:
        return summarize(routed_flow(engine=None, status=status, body=b"", **metadata)).rejected

    assert rejected(403, flm__ip_filter__denied="blocked") == "ip_blocked"
    assert rejected(503, flm__resource__shed="memory") == "resource_shed"
    limit = SecurityEvent("ratelimit.exceeded", Severity.LOW, None, {"limit": "tokens"})
    assert rejected(429, flm__security__events=[limit]) == "rate_limit_tokens"
    auth = SecurityEvent("auth.failed", Severity.LOW, None, {"reason": "missing"})
    assert rejected(401, flm__security__events=[auth]) == "auth_missing"
    assert rejected(404, flm__security__events=[]) is None
    assert rejected(429, flm__security__rejected="custom") == "custom"
    # Answered by an engine: not a rejection, whatever events the flow carries.
    assert summarize(routed_flow(status=429, flm__security__events=[limit])).rejected is None
