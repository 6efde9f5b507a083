"""Engine errors reach API clients in OpenAI's error shape, with the engine's status and message.

Engines answer errors each their own way: llama.cpp
`{"error": {"code": 500, "message": ..., "type": "server_error"}}` (an integer
`code`), vLLM and FastAPI `{"detail": ...}` or `{"object": "error", "message": ...}`,
Ollama `{"error": "..."}`, uvicorn a plain-text `Bad Request`, some an event stream
whose first event is the error. OpenAI's SDKs read `error.message`, `error.type` and
`error.code` (a string), so on API listeners every engine answer with status >= 400
becomes `{"error": {"message", "type", "param", "code"}}` (LiteLLM does the same):
- the status stays;
- `message`: the engine's message (`error.message`, `error` as text, `detail`,
  `message`, or the plain-text body), shown through `text.printable`, at most
  `MAX_MESSAGE` characters; without one, "The engine answered <status> <reason>.";
- `type`: the engine's `type` when it gave a word, else OpenAI's type for the status;
- `param`: the engine's `param` when it is a string, else null;
- `code`: the engine's code when it gave a word (`context_length_exceeded`), else
  `upstream_<status>` (the request log's `error_kind` for engine errors).
Only the first `MAX_ERROR_BODY` bytes of an error body are parsed. Already
OpenAI-shaped answers (the response timeout's 504) come out unchanged.

On `responseheaders` an engine's error answer (routed, API listener, status >= 400)
is marked `flm.engine_errors.pending` (`streaming` keeps error answers buffered); on
`response` a marked answer that is still an error is rewritten (a failed-over request
is marked anew by its final answer's head). Passthrough listeners keep the engine's shape:
their clients speak the engine's own API. Reads `flm.listener`, `flm.route.engine`.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http
from mitmproxy.net.http import status_codes

from flm_gateway.core.errors import default_type, error_body
from flm_gateway.core.text import clip, printable
from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import ENGINE_ERRORS_PENDING, LISTENER, ROUTE_ENGINE

MAX_ERROR_BODY = 64 * 1024
"""Bytes of an engine's error body read for its message; the rest is ignored."""
MAX_MESSAGE = 2000
"""Characters of the engine's message passed on."""


def _word(value: Any) -> str | None:
    """`value` if it is a non-empty string that is not just digits (an integer code)."""
    if isinstance(value, str) and value.strip() and not value.strip().isdigit():
        return value.strip()
    return None


def _sse_payload(text: str) -> str:
    """The data of the first event of an event stream (the error event)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
        elif not line.strip() and lines:
            break
    return "\n".join(lines)


def _fields(payload: Any) -> tuple[Any, Any, Any, Any]:
    """(message, type, param, code) found in a parsed error body."""
    if not isinstance(payload, dict):
        return None, None, None, None
    error = payload.get("error")
    if isinstance(error, dict):
        return error.get("message"), error.get("type"), error.get("param"), error.get("code")
    if isinstance(error, str):  # Ollama
        return error, payload.get("type"), None, payload.get("code")
    detail = payload.get("detail")  # FastAPI (vLLM): a string, or the validation errors
    if detail is not None:
        message = detail if isinstance(detail, str) else json.dumps(detail)
        return message, payload.get("type"), None, payload.get("code")
    return payload.get("message"), payload.get("type"), payload.get("param"), payload.get("code")


def openai_error(status: int, content_type: str, body: bytes) -> bytes:
    """The OpenAI-shaped error body for an engine's error answer (see the module docstring)."""
    text = body[:MAX_ERROR_BODY].decode("utf-8", errors="replace")
    if content_type.startswith("text/event-stream"):
        text = _sse_payload(text)
    message: Any = None
    type_ = param = code = None
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            message, type_, param, code = _fields(json.loads(stripped))
        except ValueError:  # cut at MAX_ERROR_BODY, or not JSON after all: shown as text
            message = stripped
    elif stripped:
        message = stripped
    if not isinstance(message, str) or not message.strip():
        reason = status_codes.RESPONSES.get(status, "")
        message = f"The engine answered {status} {reason}".rstrip() + "."
    return error_body(
        status,
        clip(printable(message.strip()), MAX_MESSAGE),
        _word(type_) or default_type(status),
        _word(code) or f"upstream_{status}",
        param if isinstance(param, str) else None,
    )


def _on_api_listener(flow: http.HTTPFlow) -> bool:
    listener = LISTENER.get(flow)
    return listener is not None and listener.passthrough is None


class EngineErrors(Unconfigured):
    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if (
            response is not None
            and response.status_code >= 400
            and ROUTE_ENGINE.get(flow) is not None
            and _on_api_listener(flow)
        ):
            ENGINE_ERRORS_PENDING.set(flow, True)

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if (
            not ENGINE_ERRORS_PENDING.pop(flow, False)
            or response is None
            or response.status_code < 400
            or response.stream
        ):
            return
        raw = response.raw_content or b""
        if "content-encoding" not in response.headers:
            body = raw
        elif len(raw) <= MAX_ERROR_BODY:  # decompressed only when small: no zip bomb
            body = response.get_content(strict=False) or b""
        else:
            body = b""
        content_type = response.headers.get("content-type", "").lower()
        new = openai_error(response.status_code, content_type, body)
        response.headers.pop("content-encoding", None)
        response.headers["content-type"] = "application/json"
        response.content = new
