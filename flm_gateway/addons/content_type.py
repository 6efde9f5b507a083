"""Content type: a request body must say it is JSON before anything reads it as JSON.

Why: a web page may send `text/plain`, `application/x-www-form-urlencoded` or
`multipart/form-data` bodies, or a body with no content type, cross-site
without a CORS preflight (a "simple" request). Engines that read every body as
JSON whatever its type (Ollama, llama.cpp) would act on it, and so would the
gateway's own JSON endpoints. A body that declares JSON is one a page can send
only after a preflight, which `cors` answers for allowed origins only. The
`Origin` check in `cors` already refuses browsers that name their origin; this
holds for those that do not. The same rule as FastAPI (CVE-2021-32677) and
Ollama's own clients, which always send `Content-Type: application/json`.

Policy (on `requestheaders`, before the body is read; every listener,
passthrough included): a request that carries a body (`Content-Length` above 0,
or any `Transfer-Encoding`) must have exactly one `Content-Type`, whose media
type is `application/json` or `application/<anything>+json` (parameters
allowed, any case); on the OpenAI upload endpoints (`/v1/audio/transcriptions`,
`/v1/audio/translations`) it must be `multipart/form-data`, which they alone
take. Otherwise 415 `unsupported_media_type`. So `curl -d '{...}'`
without `-H 'Content-Type: application/json'` is refused too: curl then sends
`application/x-www-form-urlencoded`, exactly what a cross-site form sends, and
the two cannot be told apart. Bodyless requests pass whatever they declare.
Fails closed. Reads `flm.listener`; writes `flm.security.rejected` =
`content_type` on refusal.
"""

from __future__ import annotations

from mitmproxy import http

from flm_gateway.core.errors import error_response
from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.api_kind import MULTIPART_ENDPOINTS
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import LISTENER, SECURITY_REJECTED

MULTIPART = b"multipart/form-data"
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_WATCHED = {len(name): name for name in (_CONTENT_TYPE, _CONTENT_LENGTH, _TRANSFER_ENCODING)}
"""The three header names differ in length: one length test skips every other field."""


def media_type(content_type: bytes) -> bytes:
    """`type/subtype` of a Content-Type value, lower case, parameters dropped."""
    return content_type.partition(b";")[0].strip().lower()


def is_json(media: bytes) -> bool:
    kind, slash, subtype = media.partition(b"/")
    return (
        kind == b"application"
        and bool(slash)
        and (subtype == b"json" or (subtype.endswith(b"+json") and len(subtype) > 5))
    )


def body_and_types(request: http.Request) -> tuple[bool, list[bytes]]:
    """Whether the request carries a body (`Content-Length` above 0 or any
    `Transfer-Encoding`, decided before it is read), and its Content-Type values."""
    body, types = False, []
    for name, value in request.headers.fields:
        watched = _WATCHED.get(len(name))
        if watched is None or name.lower() != watched:
            continue
        if watched is _CONTENT_TYPE:
            types.append(value)
        elif watched is _TRANSFER_ENCODING or value.strip() not in (b"0", b""):
            body = True
    return body, types


class ContentType(Unconfigured):
    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        if flow.response is not None or LISTENER.get(flow) is None:
            return
        body, types = body_and_types(request)
        if not body:
            return
        media = media_type(types[0]) if len(types) == 1 else b""
        if request.path.split("?", 1)[0] in MULTIPART_ENDPOINTS:
            if media == MULTIPART:
                return
            message = "This endpoint takes a multipart/form-data body."
        elif is_json(media):
            return
        else:
            message = (
                "This endpoint takes a JSON body: send Content-Type: application/json "
                "(with curl: -H 'Content-Type: application/json')."
            )
        flow.response = error_response(415, message, code="unsupported_media_type")
        SECURITY_REJECTED.set(flow, "content_type")
