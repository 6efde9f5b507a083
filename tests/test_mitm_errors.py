"""mitmproxy's own error responses become OpenAI-shaped JSON (pins a mitmproxy internal)."""

from __future__ import annotations

import json

from mitmproxy.proxy.layers.http import _http1

from flm_gateway.proxy import mitm_errors


def test_install_replaces_mitmproxys_renderer() -> None:
    mitm_errors.install()
    assert _http1.make_error_response is mitm_errors.render_protocol_error


def test_rendered_error_is_json_without_addresses() -> None:
    raw = mitm_errors.render_protocol_error(502, "Connection refused (127.0.0.1:18002)")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502")
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "engine_unavailable"
    assert "127.0.0.1" not in error["message"]
    assert (
        json.loads(mitm_errors.render_protocol_error(413).partition(b"\r\n\r\n")[2])["error"][
            "code"
        ]
        == "request_too_large"
    )
