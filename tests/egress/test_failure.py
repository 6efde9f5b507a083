"""EgressFailure: client message, status, code, and its trip through mitmproxy's error text."""

from __future__ import annotations

import json

from flm_gateway.egress.failure import EgressFailure, Reason, failure_from_message
from flm_gateway.proxy.mitm_errors import render_protocol_error


def test_marker_survives_mitmproxys_connect_error_message() -> None:
    failure = EgressFailure("onion", "tor", Reason.TOR_NOT_BOOTSTRAPPED, "0%", "x.onion:80")
    message = "Upstream proxy 127.0.0.1:40001 refused HTTP CONNECT request: 503 " + failure.marker()
    parsed = failure_from_message(message)
    assert parsed is not None
    assert (parsed.profile, parsed.mode, parsed.reason) == ("onion", "tor", failure.reason)
    assert failure_from_message("Connection killed: " + failure.marker()) is not None
    assert failure_from_message("connection refused") is None


def test_client_sees_profile_and_reason_but_no_address() -> None:
    failure = EgressFailure(
        "bastion", "socks5", Reason.PROXY_UNREACHABLE, "cannot connect to 10.1.2.3:1080",
        "engine.lan:8000",
    )  # fmt: skip
    response = failure.response()
    assert response.status_code == 503
    error = json.loads(response.get_content() or b"")["error"]
    assert error["code"] == "egress_proxy_unreachable"
    assert error["message"] == "egress 'bastion' (socks5) failed: the proxy is unreachable"
    assert "10.1.2.3" not in error["message"] and "engine.lan" not in error["message"]
    assert "10.1.2.3" in failure.log_message() and "engine.lan:8000" in failure.log_message()


def test_statuses() -> None:
    def status(reason: Reason) -> int:
        return EgressFailure("p", "tor", reason).status

    assert status(Reason.TOR_NOT_BOOTSTRAPPED) == 503
    assert status(Reason.PROXY_AUTH_REJECTED) == 502
    assert status(Reason.TARGET_REFUSED) == 502
    assert status(Reason.TIMEOUT) == 504


def test_mitmproxys_own_error_renderer_keeps_the_egress_status() -> None:
    failure = EgressFailure("onion", "tor", Reason.TOR_CIRCUIT_FAILED)
    raw = render_protocol_error(502, "Upstream proxy x refused: 503 " + failure.marker())
    assert raw.startswith(b"HTTP/1.1 503 ")
    assert b'"code": "egress_tor_circuit_failed"' in raw
    assert render_protocol_error(502, "boom").startswith(b"HTTP/1.1 502 ")
