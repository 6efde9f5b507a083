"""Every `flow.metadata` key the gateway uses, each named once, typed and documented.

Addons share data only through `flow.metadata` (STYLE.md habit 7). Each key is a
`MetaKey[T]` constant here: a typo in its name is an ImportError at import and a mypy
error, never a silent `None`, and mypy knows the type of what it holds. A key says
what it holds (`about`) and which modules write and read it (`writers`, `readers`: module
names, unique in the package); `tests/test_flow_meta.py` checks those lists against the
source and that no module outside this one spells an `flm.*` metadata key as a string.

`MetaKey` is a thin view over the flow's dict: one method call around one dict
operation, nothing allocated. Its methods take the flow, not the dict.
The value types of higher layers are imported for mypy only (`TYPE_CHECKING`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from mitmproxy.flow import Flow

    from flm_gateway.bodies.multipart import Part
    from flm_gateway.config.listener_settings import ListenerConfig
    from flm_gateway.config.route_settings import RouteConfig
    from flm_gateway.core.hostnames import Authority
    from flm_gateway.egress.failure import EgressFailure
    from flm_gateway.engines.directory import EngineState
    from flm_gateway.observability.flow_summary import FlowSummary, StreamTap
    from flm_gateway.proxy.api_kind import ApiKind
    from flm_gateway.routing.candidates import Candidate
    from flm_gateway.routing.upstream import ProbeResult
    from flm_gateway.security.events import SecurityEvent
    from flm_gateway.security.ratelimit import Bucket
    from flm_gateway.security.shared_buckets import SharedTokenBucket
    from flm_gateway.state.store import KeyRecord


class MetaKey[T]:
    """One `flow.metadata` key whose value is a `T`."""

    __slots__ = ("about", "name", "readers", "writers")

    def __init__(
        self, name: str, about: str, *, writers: tuple[str, ...], readers: tuple[str, ...]
    ) -> None:
        self.name = name
        self.about = about
        self.writers = writers
        self.readers = readers

    def __repr__(self) -> str:
        return f"MetaKey({self.name!r})"

    @overload
    def get(self, flow: Flow) -> T | None: ...
    @overload
    def get(self, flow: Flow, default: T) -> T: ...
    def get(self, flow: Flow, default: T | None = None) -> T | None:
        return flow.metadata.get(self.name, default)

    def require(self, flow: Flow) -> T:
        """The value; KeyError when unset (for keys an earlier hook always sets)."""
        return flow.metadata[self.name]  # type: ignore[no-any-return]

    def is_set(self, flow: Flow) -> bool:
        return self.name in flow.metadata

    def set(self, flow: Flow, value: T) -> None:
        flow.metadata[self.name] = value

    def setdefault(self, flow: Flow, value: T) -> T:
        return flow.metadata.setdefault(self.name, value)  # type: ignore[no-any-return]

    @overload
    def pop(self, flow: Flow) -> T | None: ...
    @overload
    def pop(self, flow: Flow, default: T) -> T: ...
    def pop(self, flow: Flow, default: T | None = None) -> T | None:
        """Take the value out (a reader that also clears it)."""
        return flow.metadata.pop(self.name, default)  # type: ignore[no-any-return]


# ---- who the client is, on which listener ---------------------------------------------

LISTENER: MetaKey[ListenerConfig | None] = MetaKey(
    "flm.listener",
    "The `ListenerConfig` whose socket accepted the connection; None once a reload "
    "removed it (answered 503).",
    writers=("listener_context",),
    readers=(
        "content_type",
        "engine_errors",
        "flow_summary",
        "host_check",
        "listener_context",
        "model_alias",
        "openai_api",
        "passthrough",
        "policies",
        "response_headers",
    ),
)
REQUEST_ID: MetaKey[str] = MetaKey(
    "flm.request_id",
    "The request's id, echoed in `x-request-id` and written to the logs.",
    writers=("listener_context",),
    readers=("audit", "flow_summary", "listener_context", "token_accounting"),
)
CLIENT_IP: MetaKey[str] = MetaKey(
    "flm.client_ip",
    "The client's address: the peer's (`listener_context`), then the one a trusted "
    "proxy forwarded (`client_ip`).",
    writers=("client_ip", "listener_context"),
    readers=("flow_summary", "policies"),
)
PEER_IP: MetaKey[str] = MetaKey(
    "flm.peer_ip",
    "The TCP peer's address when `client_ip` took the client's from a header; no module "
    "reads it (kept in flow dumps for whoever debugs a forwarded address).",
    writers=("client_ip",),
    readers=(),
)
HOST: MetaKey[Authority | None] = MetaKey(
    "flm.host",
    "The authority the client named (Host, :authority or absolute target), when the "
    "listener's host policy allows it; None when it named none or one not allowed.",
    writers=("host_check",),
    readers=("cors",),
)
TARGET_ORIGINAL: MetaKey[str] = MetaKey(
    "flm.target.original",
    "The request target as the client sent it, when the canonical form differs.",
    writers=("canonical_target",),
    readers=("passthrough",),
)

# ---- authentication and security verdicts ---------------------------------------------

AUTH_KEY: MetaKey[KeyRecord] = MetaKey(
    "flm.auth.key",
    "The API key the request authenticated with.",
    writers=("auth",),
    readers=("rate_limit", "request_limits", "scopes"),
)
AUTH_KEY_ID: MetaKey[str] = MetaKey(
    "flm.auth.key_id",
    "The id of that key (safe to log).",
    writers=("auth",),
    readers=("anomaly", "audit", "flow_summary", "token_charge"),
)
AUTH_FAILURE: MetaKey[str] = MetaKey(
    "flm.auth.failure",
    "Why authentication failed (`missing`, `unknown`, `expired`, `revoked`, `unavailable`).",
    writers=("auth",),
    readers=("flow_summary",),
)
SECURITY_REJECTED: MetaKey[str] = MetaKey(
    "flm.security.rejected",
    "An explicit reason a policy refused the request for (`host`, `origin`, ...), for "
    "the metrics; without it `flow_summary` derives one from `flm.ip_filter.denied`, "
    "`flm.resource.shed`, `flm.auth.failure` and the security events.",
    writers=("canonical_target", "content_type", "cors", "host_check", "passthrough"),
    readers=("flow_summary",),
)
SECURITY_EVENTS: MetaKey[list[SecurityEvent]] = MetaKey(
    "flm.security.events",
    "Security events noticed on this flow, in order (`security.events.record`).",
    writers=("events",),
    readers=("audit", "events", "flow_summary"),
)
IP_FILTER_DENIED: MetaKey[str] = MetaKey(
    "flm.ip_filter.denied",
    "Why the client's address was refused: `not_allowed` or `blocked`.",
    writers=("ip_filter",),
    readers=("flow_summary",),
)
RESOURCE_SHED: MetaKey[str] = MetaKey(
    "flm.resource.shed",
    "Why the request was shed under memory or connection pressure.",
    writers=("resource_guard",),
    readers=("flow_summary",),
)
GUARD_FAILED: MetaKey[str] = MetaKey(
    "flm.guard.failed",
    "`addon.hook` that raised; the flow was answered 500 (fail closed).",
    writers=("fail_closed",),
    readers=("flow_summary",),
)
INTRUSION_RULES: MetaKey[list[str]] = MetaKey(
    "flm.intrusion.rules",
    "Ids of the intrusion rules the request matched; no module reads it (tests and "
    "flow dumps do, the audit log has the same ids from the events).",
    writers=("intrusion",),
    readers=(),
)
AUTO_BLOCK_COUNTED: MetaKey[bool] = MetaKey(
    "flm.auto_block.counted",
    "The flow's offences were counted (once, on response or error).",
    writers=("auto_block",),
    readers=("auto_block",),
)
AUDIT_WRITTEN: MetaKey[int] = MetaKey(
    "flm.audit.written",
    "How many of the flow's security events the audit log has written (a streamed "
    "flow's on `responseheaders`, later ones on `response`).",
    writers=("audit",),
    readers=("audit",),
)
CORS_PREFLIGHT: MetaKey[bool] = MetaKey(
    "flm.cors.preflight",
    "The request is a CORS preflight the gateway answers itself.",
    writers=("cors",),
    readers=("cors",),
)
CORS_PREFLIGHT_HEADERS: MetaKey[dict[str, str]] = MetaKey(
    "flm.cors.preflight_headers",
    "The CORS headers the preflight answer carries.",
    writers=("cors",),
    readers=("cors",),
)

# ---- the API call ---------------------------------------------------------------------

API_KIND: MetaKey[ApiKind] = MetaKey(
    "flm.api.kind",
    "The kind of API call (`ApiKind`); `ROUTED_KINDS` are routed by model.",
    writers=("cors", "health_endpoints", "honeypot", "openai_api", "passthrough"),
    readers=(
        "candidates",
        "failover",
        "flow_summary",
        "mitm_failover",
        "model_alias",
        "model_routing",
        "request_limits",
        "request_logger",
        "scopes",
        "token_accounting",
    ),
)
API_BODY: MetaKey[dict[str, Any]] = MetaKey(
    "flm.api.body",
    "The parsed, type-checked JSON body of a chat, completions or embeddings call; "
    "whoever changes it re-serialises it into the request.",
    writers=("openai_api",),
    readers=("candidates", "request_limits", "token_accounting"),
)
API_FORM: MetaKey[list[Part]] = MetaKey(
    "flm.api.form",
    "The parts of an audio upload (multipart), in order; routing re-serialises them "
    "with the upstream model.",
    writers=("openai_api",),
    readers=("candidates",),
)
API_MODEL: MetaKey[str] = MetaKey(
    "flm.api.model",
    "The model the client asked for.",
    writers=("openai_api",),
    readers=(
        "anomaly",
        "candidates",
        "failover",
        "flow_summary",
        "model_alias",
        "model_routing",
        "request_limits",
        "scopes",
    ),
)
API_STREAM: MetaKey[bool] = MetaKey(
    "flm.api.stream",
    "The client asked for a streamed answer.",
    writers=("openai_api",),
    readers=("token_accounting",),
)

# ---- routing and egress ---------------------------------------------------------------

ROUTE_ROUTE: MetaKey[RouteConfig | None] = MetaKey(
    "flm.route.route",
    "The route the model matched (None: served by an engine's own model list).",
    writers=("model_routing",),
    readers=("failover", "flow_summary"),
)
ROUTE_ENGINE: MetaKey[str] = MetaKey(
    "flm.route.engine",
    "The engine the request is sent to (set for routed and passthrough calls).",
    writers=("upstream",),
    readers=(
        "egress_dispatch",
        "engine_concurrency",
        "engine_errors",
        "failover",
        "flow_summary",
        "model_alias",
        "model_routing",
        "openai_api",
        "response_headers",
        "response_timeout",
        "token_accounting",
        "upstream_guard",
    ),
)
ROUTE_UPSTREAM_MODEL: MetaKey[str] = MetaKey(
    "flm.route.upstream_model",
    "The model name the engine is sent (the route's, or the client's).",
    writers=("candidates",),
    readers=("failover", "model_alias"),
)
ROUTE_PENDING: MetaKey[list[Candidate]] = MetaKey(
    "flm.route.pending",
    "Candidates not tried yet, in route order, for failover.",
    writers=("failover", "model_routing"),
    readers=("failover",),
)
ROUTE_FAILURES: MetaKey[list[tuple[str, ProbeResult]]] = MetaKey(
    "flm.route.failures",
    "(engine, probe result) of each candidate found unreachable before sending.",
    writers=("model_routing",),
    readers=("flow_summary",),
)
ROUTE_CLIENT_REQUEST: MetaKey[tuple[str, str | None, bytes | None]] = MetaKey(
    "flm.route.client_request",
    "(path, content-type, body) as the client sent them, kept by the first "
    "`apply_candidate` so a retry rewrites the client's request, not the last one.",
    writers=("candidates",),
    readers=("candidates",),
)
EGRESS_PROFILE: MetaKey[str] = MetaKey(
    "flm.egress.profile",
    "The egress profile the request leaves through.",
    writers=("egress_dispatch",),
    readers=("egress_dispatch",),
)
EGRESS_FAILURE: MetaKey[EgressFailure] = MetaKey(
    "flm.egress.failure",
    "Why the egress (a proxy on the way to the engine) failed the connection.",
    writers=("egress_dispatch",),
    readers=("flow_summary",),
)
EGRESS_FAILURES: MetaKey[dict[str, EgressFailure]] = MetaKey(
    "flm.egress.failures",
    "{engine: failure} of probes that failed at the egress, so the client learns which "
    "egress failed.",
    writers=("upstream",),
    readers=("flow_summary", "model_routing", "passthrough"),
)
CONCURRENCY_ENGINE: MetaKey[str] = MetaKey(
    "flm.concurrency.engine",
    "The engine whose concurrency slot this flow holds (released once).",
    writers=("engine_concurrency",),
    readers=("engine_concurrency",),
)

# ---- failover -------------------------------------------------------------------------

FAILOVER_POSSIBLE: MetaKey[frozenset[str]] = MetaKey(
    "flm.failover.possible",
    "The reasons this flow may fail over on (`connect`, `disconnected`, `5xx`, `timeout`).",
    writers=("failover",),
    readers=("mitm_failover",),
)
FAILOVER_HOLD_TIMEOUT: MetaKey[float] = MetaKey(
    "flm.failover.hold_timeout",
    "Seconds a held 5xx body may take to arrive (the engine's response timeout).",
    writers=("failover",),
    readers=("mitm_failover",),
)
FAILOVER_REASON: MetaKey[str] = MetaKey(
    "flm.failover.reason",
    "Why the `flm_failover` hook was called for this attempt.",
    writers=("mitm_failover",),
    readers=("failover", "mitm_failover"),
)
FAILOVER_RESEND: MetaKey[bool] = MetaKey(
    "flm.failover.resend",
    "The request is being sent again to another candidate (request hooks skip work).",
    writers=("failover", "mitm_failover"),
    readers=(
        "egress_dispatch",
        "engine_concurrency",
        "mitm_failover",
        "response_timeout",
        "token_accounting",
    ),
)
FAILOVER_REUSED: MetaKey[bool] = MetaKey(
    "flm.failover.reused",
    "The failed attempt went out on a reused (possibly stale) connection.",
    writers=("mitm_failover",),
    readers=("failover",),
)
FAILOVER_ERROR: MetaKey[str | None] = MetaKey(
    "flm.failover.error",
    "mitmproxy's message for a `connect`/`disconnected` failure (None: it gave none).",
    writers=("mitm_failover",),
    readers=("failover",),
)
FAILOVER_FAILURES: MetaKey[list[tuple[str, str, str | None]]] = MetaKey(
    "flm.failover.failures",
    "(engine, reason, next engine or None) of each failed attempt.",
    writers=("failover",),
    readers=("failover", "flow_summary"),
)
FAILOVER_TRIED: MetaKey[list[Candidate]] = MetaKey(
    "flm.failover.tried",
    "The candidates sent the request, in order (a stale retry not counted).",
    writers=("failover",),
    readers=("failover",),
)
FAILOVER_ATTEMPT: MetaKey[int] = MetaKey(
    "flm.failover.attempt",
    "1 for the first send, +1 for each re-send (timers of older ones ignore it).",
    writers=("failover",),
    readers=("failover", "response_timeout"),
)
FAILOVER_IN_FLIGHT: MetaKey[EngineState] = MetaKey(
    "flm.failover.in_flight",
    "The engine the current attempt is in flight at (its in-flight count is ours).",
    writers=("failover",),
    readers=("failover",),
)
FAILOVER_SENT_AT: MetaKey[float] = MetaKey(
    "flm.failover.sent_at",
    "time.monotonic() when the current attempt was sent (latency sample).",
    writers=("failover",),
    readers=("failover",),
)
FAILOVER_STALE_RETRIED: MetaKey[bool] = MetaKey(
    "flm.failover.stale_retried",
    "The one free retry after a stale connection was used.",
    writers=("failover",),
    readers=("failover",),
)
FAILOVER_AGAIN: MetaKey[list[Candidate]] = MetaKey(
    "flm.failover.again",
    "Candidates to cycle through again after backoff, round after round.",
    writers=("failover",),
    readers=("failover",),
)
FAILOVER_UNDO_SUCCESS: MetaKey[tuple[EngineState, int, float | None, float]] = MetaKey(
    "flm.failover.undo_success",
    "(engine, failures, latency, down_until) before a held stream's head counted as a "
    "success, restored should the engine die before its first event.",
    writers=("failover",),
    readers=("failover",),
)
UPSTREAM_ANSWERED: MetaKey[bool] = MetaKey(
    "flm.upstream.answered",
    "The engine sent a response head for this attempt (passive health counts it once).",
    writers=("failover", "mitm_failover"),
    readers=("failover", "mitm_failover"),
)
UPSTREAM_TIMED_OUT: MetaKey[bool] = MetaKey(
    "flm.upstream.timed_out",
    "The engine did not answer within its response timeout.",
    writers=("mitm_failover", "response_timeout"),
    readers=("flow_outcome", "mitm_failover"),
)
STREAM_INTERRUPTED: MetaKey[bool] = MetaKey(
    "flm.stream.interrupted",
    "A streamed answer was cut after its head and ended with a `stream_interrupted` "
    "event; no module reads it (kept in flow dumps).",
    writers=("mitm_failover",),
    readers=(),
)
ENGINE_ERRORS_PENDING: MetaKey[bool] = MetaKey(
    "flm.engine_errors.pending",
    "An engine's error body is to be rewritten when it arrives.",
    writers=("engine_errors",),
    readers=("engine_errors",),
)
STREAMED: MetaKey[bool] = MetaKey(
    "flm.streamed",
    "The response is streamed to the client (its body is not held).",
    writers=("streaming",),
    readers=("flow_summary",),
)

# ---- rate limits and tokens -----------------------------------------------------------

RATELIMIT_HEADERS: MetaKey[dict[str, str]] = MetaKey(
    "flm.ratelimit.headers",
    "The `x-ratelimit-*` headers the response carries (merged over the ip and key limits).",
    writers=("rate_limit",),
    readers=("rate_limit",),
)
RATELIMIT_TOKENS_IP: MetaKey[list[Bucket] | list[Bucket | SharedTokenBucket]] = MetaKey(
    "flm.ratelimit.tokens.ip",
    "The per-address token buckets to charge with the tokens used, once known.",
    writers=("rate_limit",),
    readers=("token_charge",),
)
RATELIMIT_TOKENS_KEY: MetaKey[list[Bucket] | list[Bucket | SharedTokenBucket]] = MetaKey(
    "flm.ratelimit.tokens.key",
    "The per-key token buckets to charge with the tokens used, once known.",
    writers=("rate_limit",),
    readers=("token_charge",),
)
USAGE: MetaKey[dict[str, int | bool]] = MetaKey(
    "flm.usage",
    "{prompt_tokens, completion_tokens, estimated} of the request (`Usage.as_metadata`), "
    "set before later addons' `response` hooks (and on `error` for a cut stream).",
    writers=("token_accounting",),
    readers=("flow_summary", "token_accounting", "token_charge"),
)
USAGE_STRIP: MetaKey[bool] = MetaKey(
    "flm.usage.strip",
    "The gateway asked the engine for a usage chunk the client did not; strip it.",
    writers=("token_accounting",),
    readers=("token_accounting",),
)
TOKEN_CHARGE_DONE: MetaKey[bool] = MetaKey(
    "flm.token_charge.done",
    "The used tokens were charged (once, on response or error).",
    writers=("token_charge",),
    readers=("token_charge",),
)

# ---- metrics and logs -----------------------------------------------------------------

METRICS_TAP: MetaKey[StreamTap] = MetaKey(
    "flm.metrics.tap",
    "The tap timing a streamed response's first byte and counting its bytes.",
    writers=("metrics_recorder",),
    readers=("flow_outcome", "flow_summary", "metrics_recorder"),
)
METRICS_DONE: MetaKey[bool] = MetaKey(
    "flm.metrics.done",
    "The flow was counted in the metrics (once, on response or error).",
    writers=("metrics_recorder",),
    readers=("metrics_recorder",),
)
REQUEST_LOG_DONE: MetaKey[bool] = MetaKey(
    "flm.request_log.done",
    "The flow was written to the request log (once, on response or error).",
    writers=("request_logger",),
    readers=("request_logger",),
)
SUMMARY: MetaKey[FlowSummary] = MetaKey(
    "flm.summary",
    "The `FlowSummary` of the finished flow, computed once (`summary_of`) and shared by "
    "the metrics and the request log.",
    writers=("flow_summary",),
    readers=("flow_summary",),
)
