"""The one ordered list of addons. mitmproxy calls hooks in this order for every flow.

Each entry says why it stands where it does. Hooks run per event in list order:
every addon's `requestheaders` (before the body is read) runs before any
`request` (body complete), then `responseheaders`, then `response`/`error`.
The security policies decide on `requestheaders` where they can, so a refused
client never gets its body parsed, routed or forwarded; the ones that need the
body or the model (`request_limits`, `scopes`) sit between parsing and routing.
TLS, egress and operations addons slot in at the marked places as they land.
Every entry is an `Addon` (`proxy/addon_contract.py`): the config reaches it
only through `prepare`/`commit`.
"""

from __future__ import annotations

from typing import Any

from flm_gateway.addons.anomaly import Anomaly
from flm_gateway.addons.audit import Audit
from flm_gateway.addons.auth import Auth
from flm_gateway.addons.auto_block import AutoBlock
from flm_gateway.addons.canonical_target import CanonicalTarget
from flm_gateway.addons.client_ip import ClientIp
from flm_gateway.addons.connection_limits import ConnectionLimits
from flm_gateway.addons.content_type import ContentType
from flm_gateway.addons.cors import Cors
from flm_gateway.addons.egress_dispatch import Egress
from flm_gateway.addons.engine_concurrency import EngineConcurrency
from flm_gateway.addons.engine_errors import EngineErrors
from flm_gateway.addons.failover import Failover
from flm_gateway.addons.health_endpoints import Health
from flm_gateway.addons.honeypot import Honeypot
from flm_gateway.addons.host_check import HostCheck
from flm_gateway.addons.inflight import Inflight
from flm_gateway.addons.intrusion import Intrusion
from flm_gateway.addons.ip_filter import IpFilter
from flm_gateway.addons.listener_context import ListenerContext
from flm_gateway.addons.metrics_recorder import Metrics
from flm_gateway.addons.model_alias import ModelAlias
from flm_gateway.addons.model_routing import Routing
from flm_gateway.addons.openai_api import OpenAIApi
from flm_gateway.addons.passthrough import Passthrough
from flm_gateway.addons.rate_limit import RateLimiter
from flm_gateway.addons.request_limits import RequestLimits
from flm_gateway.addons.request_logger import RequestLog
from flm_gateway.addons.resource_guard import ResourceGuard
from flm_gateway.addons.response_headers import ResponseHeaders
from flm_gateway.addons.response_timeout import ResponseTimeout
from flm_gateway.addons.scopes import Scopes
from flm_gateway.addons.state_sync import StateSync
from flm_gateway.addons.streaming import Streaming
from flm_gateway.addons.token_accounting import TokenAccounting
from flm_gateway.addons.token_charge import TokenCharge
from flm_gateway.addons.upstream_guard import UpstreamGuard
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.proxy.addon_contract import Addon
from flm_gateway.state.state_service import StateService


def build_addons(
    inflight: Inflight,
    egress: Egress | None = None,
    state: StateService | None = None,
    metrics: GatewayMetrics | None = None,
) -> list[Addon[Any]]:
    """Our addons, in hook order (mitmproxy's own core addons are added before them).

    `egress` is the gateway's egress addon (it owns the EgressService that the engine
    directory dials through); `state` is the gateway's state service, shared by the
    security addons; `metrics` is the gateway's metrics registry. Fresh ones when not
    given.
    """
    state = state if state is not None else StateService()
    metrics = metrics if metrics is not None else GatewayMetrics()
    return [
        # Counts every flow from its first byte, so drain waits for all of them.
        inflight,
        # Tags the flow with listener, request id and peer address: everything below reads them.
        ListenerContext(),
        # Connection level: caps connections per client and in all before a byte is read,
        # and closes connections without a first request in time; its one flow hook only
        # ends that wait, so it never decides on a flow.
        ConnectionLimits(metrics),
        # Keeps the state store (opened by the gateway at start, before any commit) in
        # step with the config; refuses a reload that moves it. No flow hooks.
        StateSync(state),
        # Replaces the peer with the X-Forwarded-For client, only behind trusted proxies,
        # before any policy looks at the address.
        ClientIp(),
        # First decision: allow list, block lists, and 503 while the state store is
        # unusable. Applies to health checks too: a blocked client learns nothing.
        IpFilter(state),
        # Right after the first decision, before anything spends work or answers: a
        # request must name this listener (DNS rebinding, 421) and name it one way (400).
        # Health checks too: probes use an IP or localhost, which pass.
        HostCheck(),
        # Sheds load under CPU/memory pressure before any work is spent (health exempt).
        ResourceGuard(state),
        # Per-IP request/token limits before anything else costs work: floods without a
        # key, decoy and attack traffic are limited too (health exempt).
        RateLimiter("ip"),
        # Liveness/readiness (on `request`): exempt from everything below by exact path.
        Health(),
        # Decoys before authentication: scanners are caught (and blocked) without a key.
        Honeypot(),
        # Attack signatures in the request line and headers, also before authentication.
        Intrusion(),
        # The one canonical path (decoded as engines decode it) that everything below and
        # the engine read; refuses what cannot be canonicalised (400). After honeypot and
        # intrusion, which must see the client's own spelling to catch and block scanners;
        # before CORS, auth's health exemption, passthrough's admin routes and the OpenAI
        # path match, which must all see the canonical one.
        CanonicalTarget(),
        # Browsers send preflights without credentials: answer them before auth; refuse
        # other requests from origins CORS does not allow (403) before auth too; on the
        # way out, set (or strip) CORS headers on every answer, errors included.
        Cors(),
        # Also a browser defence, before credentials are looked at and before any body is
        # read: a body must declare JSON (415), so no cross-site "simple" request (text/plain,
        # form, no type) is read as JSON by the gateway or an engine.
        ContentType(),
        # Who is calling: API key (401), listener scope (403). Health exempt.
        Auth(state),
        # Per-key limits: need the key from auth; exact under concurrency (no await, or
        # one atomic Redis script when shared).
        RateLimiter("key"),
        # Drop-in fronting: takes over whole listeners before the OpenAI API parses anything.
        Passthrough(),
        # Classifies the path, reads the body once (strictly) and types its known fields,
        # answers /v1/models and unknown paths: every addon below reads only checked fields.
        OpenAIApi(),
        # Paths, body size, the token budget: needs the checked body; before routing, so a
        # refusal probes no engine (route defaults are counted here, not left to routing).
        RequestLimits(),
        # Model and route scopes of the key: needs the model, refuses before any engine is
        # probed; trims the /v1/models answer to what the key may use.
        Scopes(),
        # Picks the engine (probe, fallbacks) and rewrites the request for it.
        Routing(),
        # Right after routing: the failover plan of the flow (attempts, conditions) and the
        # engine's in-flight count. On `flm_failover` it picks the next candidate first, so
        # the per-engine addons below (egress, slot, timer, usage) redo their work for it.
        Failover(),
        # After routing chose the engine: its egress (SOCKS/Tor via the CONNECT bridge);
        # on server_connect, refuses direct dials to engines of fail-closed proxies.
        egress if egress is not None else Egress(),
        # Waits for a slot of the chosen engine (bounded queue) after routing chose it.
        EngineConcurrency(),
        # Last on `request`: nothing undecided leaves; refuses dials to the placeholder.
        UpstreamGuard(),
        # Starts the response-header timer only for flows that really leave.
        ResponseTimeout(),
        # On `responseheaders`: streams SSE/NDJSON through unbuffered.
        Streaming(),
        # After `streaming` (it replaces the `stream = True` set there by its counting
        # callable); its `request` hook runs after routing chose the engine (it asks that engine for
        # stream usage). Writes `flm.usage`: addons that read it (rate limits on tokens,
        # metrics, request log) go below.
        TokenAccounting(),
        # After token accounting wrote `flm.usage`: charges it to the token rate limits and
        # the key's usage counters.
        TokenCharge(state),
        # What the client sees of the engine's answer, after every addon that may replace
        # it and before the observers below, which read the final answer.
        # Engine errors into OpenAI's shape on API listeners: after `streaming` (which
        # keeps error answers buffered); before `metrics`, which reads the error code.
        EngineErrors(),
        # Removes hop-by-hop and (API listeners) identity headers of engine answers.
        ResponseHeaders(),
        # The client's model name in the answer, streams included: wraps the chunk filter
        # `token_accounting` set, and is wrapped by the metrics tap, which then counts the
        # bytes really sent. After `response_headers`, so its own headers stand.
        ModelAlias(),
        # Observers of the finished flow: after every addon that changes the response or
        # writes `flm.usage`, and they tap a stream only once `streaming` and token
        # accounting set it up. They never change a flow (the security observers below
        # only add events and blocks).
        Metrics(metrics),
        # Reads the summary the metrics addon made; writes off the event loop.
        RequestLog(metrics),
        # On `response`/`error`: observes finished flows, reports anomalies as events.
        Anomaly(),
        # Counts the offences among the flow's events and blocks repeat offenders.
        AutoBlock(state),
        # Last: writes the flow's security events (including blocks) to the audit log, and
        # holds the answer until they are durable: every event is known only once every
        # addon above ran, and nothing after it may change the answer it vouches for.
        Audit(state),
    ]
