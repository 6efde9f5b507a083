"""What happened to one request, computed once when its flow ends.

Both the metrics and the request log describe a finished flow the same way, so
the description is made here, once per flow, by `summarize`, and kept in
`flm.summary` for whoever runs later on the same hook. The names
of statuses and reasons, and the rules choosing them, are `outcomes`'.

`StreamTap` sits in a streamed response's chunk path (`response.stream`) and
records when the first body byte left for the client (time to first token)
and how many bytes did; it wraps a callable another addon already set (kept as
`inner`, see `stream_filters`), so token counting and rewriting keep working.

Reads `flm.request_id`, `flm.listener`, `flm.client_ip`, `flm.auth.key_id`,
`flm.api.kind`, `flm.api.model`, `flm.route.engine`, `flm.route.route`,
`flm.route.failures`, `flm.failover.failures`, `flm.upstream.timed_out`,
`flm.egress.failures`, `flm.egress.failure`, `flm.usage`,
`flm.security.rejected`, `flm.security.events`, `flm.ip_filter.denied`,
`flm.resource.shed`, `flm.auth.failure`, `flm.streamed`, `flm.guard.failed` and `flm.metrics.tap`.
Nothing here reads a header value or a body other than the small JSON error
bodies the gateway wrote itself, so no secret can end up in a summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from flm_gateway.observability.flow_outcome import engine_error_kind, error_kind_of, sent_status
from flm_gateway.observability.outcomes import STALE, ErrorKind, UpstreamError, upstream_error
from flm_gateway.proxy.flow_meta import (
    API_KIND,
    API_MODEL,
    AUTH_FAILURE,
    AUTH_KEY_ID,
    CLIENT_IP,
    EGRESS_FAILURE,
    EGRESS_FAILURES,
    FAILOVER_FAILURES,
    GUARD_FAILED,
    IP_FILTER_DENIED,
    LISTENER,
    METRICS_TAP,
    REQUEST_ID,
    RESOURCE_SHED,
    ROUTE_ENGINE,
    ROUTE_FAILURES,
    ROUTE_ROUTE,
    SECURITY_EVENTS,
    SECURITY_REJECTED,
    STREAMED,
    SUMMARY,
    USAGE,
)

MAX_FIELD = 200

"""Longest client-supplied string (model name, path) kept in a summary."""

ChunkFilter = Callable[[bytes], bytes | Iterable[bytes]]


class StreamTap:
    """A `response.stream` callable that notes the first chunk's time and counts bytes."""

    __slots__ = ("bytes_out", "first_chunk_at", "inner")

    def __init__(self, inner: ChunkFilter | None = None) -> None:
        self.inner = inner
        self.first_chunk_at: float | None = None
        self.bytes_out = 0

    def __call__(self, chunk: bytes) -> bytes | Iterable[bytes]:
        out: bytes | Iterable[bytes] = chunk if self.inner is None else self.inner(chunk)
        if isinstance(out, bytes):
            size = len(out)
        else:
            out = out if isinstance(out, list) else list(out)
            size = sum(map(len, out))
        if size:
            if self.first_chunk_at is None:
                self.first_chunk_at = time.time()
            self.bytes_out += size
        return out


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """One finished request, as metrics and the request log see it."""

    request_id: str
    started: float
    """Epoch seconds when the request's first byte arrived."""
    listener: str
    client_ip: str
    key_id: str | None
    method: str
    path: str
    """The path without its query string (queries may carry secrets)."""
    kind: str | None
    model: str | None
    route: str | None
    engine: str | None
    status: int | None
    """The status sent to the client; None when no response was sent."""
    latency: float | None
    ttft: float | None
    """Seconds to the first body byte of a streamed response; None if not streamed."""
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    bytes_in: int
    bytes_out: int
    streamed: bool
    error_kind: str | None
    upstream_errors: tuple[tuple[str, str], ...]
    """(engine, kind) for each engine failure seen while serving this request."""
    retries: tuple[tuple[str, str, str], ...]
    """(failed engine, failover reason, engine re-sent to) for each re-send."""
    rejected: str | None
    """The security or rate-limit reason the request was refused for, if any."""


def reached_engine(flow: http.HTTPFlow) -> bool:
    """Whether the flow was sent to an engine: routed, and a connection to it was made.

    False for everything the gateway answered itself (refusals, `/v1/models`, errors
    before forwarding) and for a connect that failed, directly or at a proxied egress.
    """
    return (
        ROUTE_ENGINE.get(flow) is not None
        and flow.server_conn.timestamp_tcp_setup is not None
        and EGRESS_FAILURE.get(flow) is None
    )


def _clip(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_FIELD else text[:MAX_FIELD]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _engine_error_code(response: http.Response) -> str | None:
    """The `code` of an OpenAI-shaped error body (small bodies only)."""
    content = response.raw_content
    if not content or len(content) > 4096:
        return None
    try:
        payload = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        code = payload["error"].get("code")
        return code if isinstance(code, str) else None
    return None


def _error_kind(flow: http.HTTPFlow, engine: str | None) -> tuple[str | None, UpstreamError | None]:
    if flow.error is not None:
        return error_kind_of(flow, engine)
    response = flow.response
    if response is None or response.status_code < 400:
        return None, None
    if GUARD_FAILED.is_set(flow):
        return ErrorKind.INTERNAL_ERROR, None
    code = _engine_error_code(response) if not STREAMED.get(flow) else None
    if engine is not None and flow.server_conn.timestamp_start is not None:
        return engine_error_kind(flow, code)
    return code or f"http_{response.status_code}", None


def _egress_kind(failure: Any) -> str | None:
    """`egress_<reason>` for a failure at a proxied egress (SOCKS5, Tor), else None."""
    if failure is None or not getattr(failure, "proxied", False):
        return None
    code = getattr(failure, "code", None)
    return code if isinstance(code, str) else None


_REJECTING_EVENTS = {
    "ratelimit.exceeded": ("rate_limit", "limit"),
    "auth.failed": ("auth", "reason"),
    "auth.forbidden": ("forbidden", "reason"),
    "honeypot.hit": ("honeypot", None),
    "intrusion.detected": ("intrusion", None),
}


def _error_kind_label(error_kind: str | None, rejected: str | None) -> str | None:
    if error_kind:
        return str(error_kind)
    return f"rejected_{rejected}" if rejected else None


def rejection_reason(flow: http.HTTPFlow, engine: str | None) -> str | None:
    """Why a security or rate-limit policy refused the flow, or None.

    An explicit `flm.security.rejected` wins. Otherwise, for a flow the gateway
    answered itself with 4xx/5xx before choosing an engine: `ip_blocked` /
    `ip_not_allowed` (`flm.ip_filter.denied`), `resource_shed`
    (`flm.resource.shed`), `auth_<failure>` (`flm.auth.failure`), or from the
    last rejecting security event:
    `rate_limit_requests`, `rate_limit_tokens`, `auth_<reason>`,
    `forbidden_<reason>`, `honeypot`, `intrusion`.
    """
    explicit = SECURITY_REJECTED.get(flow)
    if explicit:
        return str(explicit)
    response = flow.response
    if response is None or response.status_code < 400 or engine is not None:
        return None
    denied = IP_FILTER_DENIED.get(flow)
    if denied:
        return f"ip_{denied}"
    if RESOURCE_SHED.get(flow):
        return "resource_shed"
    failure = AUTH_FAILURE.get(flow)
    if failure:
        return f"auth_{failure}"
    for event in reversed(SECURITY_EVENTS.get(flow) or ()):
        rule = _REJECTING_EVENTS.get(getattr(event, "type", ""))
        if rule is not None:
            prefix, detail = rule
            value = (getattr(event, "details", None) or {}).get(detail) if detail else None
            return f"{prefix}_{value}" if value else prefix
    return None


def summarize(flow: http.HTTPFlow) -> FlowSummary:
    """Describe a finished flow (call from `response` or `error`)."""
    request = flow.request
    response = flow.response
    tap: StreamTap | None = METRICS_TAP.get(flow)
    listener = LISTENER.get(flow)
    route = ROUTE_ROUTE.get(flow)
    engine: str | None = ROUTE_ENGINE.get(flow)
    usage = USAGE.get(flow) or {}
    started = request.timestamp_start
    status = sent_status(flow)
    ended = (
        response.timestamp_end
        if response is not None and response.timestamp_end is not None
        else time.time()
    )
    ttft = None
    if tap is not None and tap.first_chunk_at is not None:
        ttft = max(0.0, tap.first_chunk_at - started)
    if tap is not None:
        bytes_out = tap.bytes_out
    elif response is not None and response.raw_content is not None:
        bytes_out = len(response.raw_content)
    else:
        bytes_out = 0
    bytes_in = len(request.raw_content) if request.raw_content is not None else 0
    error_kind, upstream_kind = _error_kind(flow, engine)
    egress_failures = EGRESS_FAILURES.get(flow) or {}
    upstream_errors = [
        (name, _egress_kind(egress_failures.get(name)) or f"probe_{result}")
        for name, result in ROUTE_FAILURES.get(flow) or ()
    ]
    failed_over: list[tuple[str, str, str | None]] = FAILOVER_FAILURES.get(flow) or []
    upstream_errors.extend(
        (name, str(upstream_error(why))) for name, why, _ in failed_over if why != STALE
    )
    gave_up = bool(failed_over) and failed_over[-1][2] is None  # the last failure is counted
    egress_kind = _egress_kind(EGRESS_FAILURE.get(flow))
    if egress_kind is not None and engine is not None:
        upstream_errors.append((engine, egress_kind))
    elif upstream_kind is not None and engine is not None and not gave_up:
        upstream_errors.append((engine, str(upstream_kind)))
    retries = tuple((name, why, following) for name, why, following in failed_over if following)
    rejected = rejection_reason(flow, engine)
    return FlowSummary(
        request_id=str(REQUEST_ID.get(flow, "")),
        started=started,
        listener=listener.name if listener is not None else "",
        client_ip=str(CLIENT_IP.get(flow) or (flow.client_conn.peername or ("",))[0]),
        key_id=_clip(AUTH_KEY_ID.get(flow)),
        method=request.method,
        path=_clip(request.path.split("?", 1)[0]) or "",
        kind=API_KIND.get(flow),
        model=_clip(API_MODEL.get(flow)),
        route=_clip(getattr(route, "model", None)),
        engine=engine,
        status=status,
        latency=max(0.0, ended - started),
        ttft=ttft,
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        tokens_estimated=bool(usage.get("estimated", False)),
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        streamed=tap is not None,
        error_kind=str(error_kind)
        if error_kind
        else (f"rejected_{rejected}" if rejected else None),
        upstream_errors=tuple(upstream_errors),
        retries=retries,
        rejected=_clip(rejected),
    )


def summary_of(flow: http.HTTPFlow) -> FlowSummary:
    """The flow's summary, computed on first use and kept in `flm.summary`."""
    summary: FlowSummary | None = SUMMARY.get(flow)
    if summary is None:
        summary = summarize(flow)
        SUMMARY.set(flow, summary)
    return summary
