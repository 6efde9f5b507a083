"""CORS: which browser origins may call the API, and preflights answered by the gateway.

Policy, per listener (`security.cors`):
- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is
  answered here on `requestheaders`, before authentication (browsers send no
  credentials on preflights): 204 with `Access-Control-Allow-Origin`,
  `-Methods`, `-Headers` (the requested headers that `allow_headers` permits),
  `-Max-Age` and, if configured, `-Credentials`, when the origin, method and
  every requested header are allowed; otherwise 403 `cors_rejected` with no
  CORS headers.
- On every response (`responseheaders`): CORS headers an engine sent are
  removed; for an allowed `Origin` the gateway adds `Access-Control-Allow-Origin`
  (the origin itself, or `*` when `*` is allowed without credentials),
  `-Expose-Headers`, `-Credentials` if configured, and `Vary: Origin`. Other
  origins get no CORS headers at all, so browsers refuse to show them the answer.
- Every other request that carries an `Origin` is refused 403
  `origin_not_allowed` on `requestheaders`, before authentication, unless the
  origin is allowed or is the listener itself as the client named it
  (same-origin: the connection's scheme and the Host that `host_check`
  accepted, default ports filled in; a page served by the gateway may call it).
  `Origin: null` (sandboxed frames, file: pages, cross-origin redirects) is
  never allowed. Browsers send `Origin` on every cross-origin request and on
  every POST, so a cross-site form or `fetch` never reaches an engine, even a
  "simple" one that needs no preflight. Without `Origin`, a request with a
  method other than GET/HEAD/OPTIONS whose `Sec-Fetch-Site` is `cross-site` or
  `same-site` is refused the same way (Go's `http.CrossOriginProtection`).
Origins match exactly (scheme, host and port, case-insensitive host) or by a
`scheme://*.domain` wildcard (any subdomain, never the bare domain); the matching is
`security.cors_policy`, which `validate --effective` prints too. Reads
`flm.listener` and `flm.host`; writes `flm.cors.preflight` and, on a refusal
of a non-preflight, `flm.security.rejected` = `origin`.
"""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

from flm_gateway.core.errors import error_response
from flm_gateway.core.hostnames import Authority, parse_authority
from flm_gateway.proxy.api_kind import ApiKind
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    API_KIND,
    CORS_PREFLIGHT,
    CORS_PREFLIGHT_HEADERS,
    HOST,
    SECURITY_REJECTED,
)
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.cors_policy import CorsPolicy, cors_policies
from flm_gateway.security.policies import listener_name

_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_OTHER_SITES = frozenset({b"cross-site", b"same-site"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _refuse_origin(flow: http.HTTPFlow) -> None:
    flow.response = error_response(
        403,
        "Requests from this origin are not allowed (security.cors.allow_origins).",
        code="origin_not_allowed",
    )
    SECURITY_REJECTED.set(flow, "origin")


def _same_origin(flow: http.HTTPFlow, origin: str) -> bool:
    """`origin` is the listener itself: the connection's scheme and the Host the client
    named (as `host_check` accepted it), default ports filled in."""
    named: Authority | None = HOST.get(flow)
    scheme, separator, rest = origin.strip().lower().partition("://")
    if named is None or not separator or scheme not in _DEFAULT_PORTS:
        return False
    own_scheme = "https" if flow.client_conn.tls_established else "http"
    claimed = parse_authority(rest)
    return (
        claimed is not None
        and scheme == own_scheme
        and claimed.host == named.host
        and (claimed.port or _DEFAULT_PORTS[scheme]) == (named.port or _DEFAULT_PORTS[scheme])
    )


def _strip_engine_cors(response: http.Response) -> None:
    # Most engines send no CORS header: scan the raw names before decoding any.
    if not any(name[:15].lower() == b"access-control-" for name, _ in response.headers.fields):
        return
    for name in list(response.headers.keys()):
        if name.lower().startswith("access-control-"):
            del response.headers[name]


class Cors:
    def __init__(self) -> None:
        self._policies: Mapping[str, CorsPolicy] = {}

    def prepare(self, runtime: Runtime) -> Mapping[str, CorsPolicy]:
        return cors_policies(runtime.loaded.config)

    def commit(self, prepared: Mapping[str, CorsPolicy]) -> None:
        self._policies = prepared

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        request = flow.request
        # One pass over the raw fields: most requests carry no Origin and leave here.
        origins, sites = [], []
        for name, value in request.headers.fields:
            if len(name) == 6 and name.lower() == b"origin":
                origins.append(value)
            elif len(name) == 14 and name.lower() == b"sec-fetch-site":
                sites.append(value.lower())
        if not origins:
            if request.data.method not in _SAFE_METHODS and any(s in _OTHER_SITES for s in sites):
                _refuse_origin(flow)
            return
        origin = ", ".join(value.decode("latin-1") for value in origins)  # two never match
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            self._preflight(flow, origin)
            return
        policy = self._policies.get(listener_name(flow) or "")
        if not (policy is not None and policy.allows_origin(origin)) and not _same_origin(
            flow, origin
        ):
            _refuse_origin(flow)

    def _preflight(self, flow: http.HTTPFlow, origin: str) -> None:
        request = flow.request
        CORS_PREFLIGHT.set(flow, True)
        API_KIND.set(flow, ApiKind.PREFLIGHT)
        policy = self._policies.get(listener_name(flow) or "")
        method = request.headers["access-control-request-method"].strip().upper()
        wanted = [
            h.strip().lower()
            for h in request.headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        ]
        if (
            policy is None
            or not policy.allows_origin(origin)
            or method not in policy.methods
            or not all(policy.allows_header(h) for h in wanted)
        ):
            flow.response = error_response(
                403, "This origin, method or header is not allowed.", code="cors_rejected"
            )
            return
        headers = {
            "access-control-allow-origin": policy.allow_origin_value(origin),
            "access-control-allow-methods": ", ".join(sorted(policy.methods)),
            "access-control-max-age": policy.max_age,
            "vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
        if wanted:
            headers["access-control-allow-headers"] = ", ".join(wanted)
        if policy.credentials:
            headers["access-control-allow-credentials"] = "true"
        flow.response = http.Response.make(204, b"", headers)
        CORS_PREFLIGHT_HEADERS.set(flow, headers)

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None:
            return
        preflight_headers: dict[str, str] | None = CORS_PREFLIGHT_HEADERS.get(flow)
        _strip_engine_cors(response)
        if preflight_headers is not None:
            response.headers.update(preflight_headers)
            return
        if CORS_PREFLIGHT.get(flow):
            return  # a refused preflight: no CORS headers at all
        origin = flow.request.headers.get("origin")
        policy = self._policies.get(listener_name(flow) or "")
        if origin is None or policy is None or not policy.enabled:
            return
        response.headers["vary"] = _add_vary(response.headers.get("vary", ""), "Origin")
        if not policy.allows_origin(origin):
            return
        response.headers["access-control-allow-origin"] = policy.allow_origin_value(origin)
        if policy.expose:
            response.headers["access-control-expose-headers"] = policy.expose
        if policy.credentials:
            response.headers["access-control-allow-credentials"] = "true"


def _add_vary(current: str, name: str) -> str:
    values = [v.strip() for v in current.split(",") if v.strip()]
    if name.lower() not in (v.lower() for v in values):
        values.append(name)
    return ", ".join(values)
