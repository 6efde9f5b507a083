"""What the gateway answers itself: OpenAI-shaped errors and plain JSON bodies.

The one shape of every error a client sees is OpenAI's error JSON.

`{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}` with the
matching HTTP status; `param` names the request field at fault (`max_tokens`,
`messages[0].role`), else null. Messages name what went wrong for the client; they
never carry tracebacks, file paths, engine credentials or internal addresses, and
quote client input only through `text.echo`.
"""

from __future__ import annotations

import json

from mitmproxy import http

_DEFAULT_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def default_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    return _DEFAULT_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(
    status: int,
    message: str,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """The JSON bytes of an OpenAI-shaped error."""
    error = {
        "message": message,
        "type": type_ or default_type(status),
        "param": param,
        "code": code,
    }
    return json.dumps({"error": error}).encode()


def error_response(
    status: int,
    message: str,
    type_: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> http.Response:
    """A ready mitmproxy response carrying an OpenAI-shaped error."""
    all_headers = {"content-type": "application/json", "cache-control": "no-store"}
    all_headers.update(headers or {})
    return http.Response.make(status, error_body(status, message, type_, code, param), all_headers)


def json_response(status: int, payload: object) -> http.Response:
    """A JSON response the gateway answers itself (model lists, health)."""
    return http.Response.make(
        status,
        json.dumps(payload).encode(),
        {"content-type": "application/json", "cache-control": "no-store"},
    )
