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

from flm_gateway.addons.guard import fail_closed
from flm_gateway.addons.openai_api import MULTIPART_ENDPOINTS
from flm_gateway.errors import error_response

MULTIPART = "multipart/form-data"


def media_type(content_type: str) -> str:
    """`type/subtype` of a Content-Type value, lower case, parameters dropped."""
    return content_type.partition(";")[0].strip().lower()


def is_json(media: str) -> bool:
    kind, slash, subtype = media.partition("/")
    return (
        kind == "application"
        and bool(slash)
        and (subtype == "json" or (subtype.endswith("+json") and len(subtype) > 5))
    )


def has_body(request: http.Request) -> bool:
    """The request carries a body (decided from the headers, before it is read)."""
    if "transfer-encoding" in request.headers:
        return True
    length = str(request.headers.get("content-length", "0")).strip()
    return length != "0" and length != ""


class ContentType:
    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        if flow.response is not None or flow.metadata.get("flm.listener") is None:
            return
        if not has_body(request):
            return
        declared = request.headers.get_all("content-type")
        media = media_type(declared[0]) if len(declared) == 1 else ""
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
        flow.metadata["flm.security.rejected"] = "content_type"
