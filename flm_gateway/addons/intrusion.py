"""Intrusion detection: attack signatures in the request line and headers, in linear time.

Policy (on `requestheaders`, before authentication so attackers are seen
without a key): the rules of `security.intrusion_rules` run against the raw
target, the path (decoded), the query (decoded) and header values, each rule on
the inputs its attack works through; credential headers are never inspected and
**request bodies never are**, so prompts that discuss SQL, shell commands or file
paths pass. Every hit is recorded as `intrusion.detected` with its rule id,
category and where it matched (never the matched value). The listener's
`security.intrusion.actions` maps the highest hit severity to an action: `log`
(forward, audit only), `reject` (answer `reject_status`, 403 by default,
`request_rejected`) or `block` (reject, and the hit counts as offence
`intrusion` towards `auto_block.intrusion_hits`). Health endpoints are not
inspected. Writes `flm.intrusion.rules` (ids hit).

Bounded, linear work: every pattern is RE2 (`security.linear_re`), and each
input kind is one pass of one combined pattern (all header values in one pass);
rules are asked one by one only when that pass found something. Everything the HTTP
layer admitted is inspected in full, never truncated, so no payload can hide behind
padding in an uninspected tail. The size is bounded once, before any addon runs, by
`server.limits` (`mitm_http1`: a request line over `max_url_length` gets 414, a
header line over `max_header_line`, a head over `max_head_size` or more than
`max_headers` header lines 431): RE2 being linear, these limits bound the work here
too (docs/security.md, class 3, gives the worst case). Fails closed
(`fail_closed`: 500).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mitmproxy import http

from flm_gateway.config.security_settings import IntrusionAction, IntrusionSettings
from flm_gateway.core.errors import error_response
from flm_gateway.core.paths import decode_repeatedly
from flm_gateway.core.text import echo
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import INTRUSION_RULES
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.events import Offence, record
from flm_gateway.security.intrusion_rules import (
    HEADERS,
    PATH,
    QUERY,
    RAW,
    USER_AGENT,
    Rule,
    RuleSet,
)
from flm_gateway.security.policies import is_health_check, listener_name, per_listener

CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-api-key", b"cookie", b"proxy-authorization"})
_ACTION_RANK = {IntrusionAction.LOG: 0, IntrusionAction.REJECT: 1, IntrusionAction.BLOCK: 2}


@dataclass(frozen=True)
class Hit:
    rule: Rule
    location: str


@dataclass(frozen=True)
class _Policy:
    settings: IntrusionSettings
    rules: RuleSet


def _header_location(name: bytes) -> str:
    return "header:" + echo(name.decode("latin-1").lower(), 64)


def inspect(request: http.Request, rules: RuleSet) -> list[Hit]:
    """Every rule that matches `request`'s target or headers (one hit per rule)."""
    target = request.data.path
    headers = [(n, v) for n, v in request.headers.fields if n.lower() not in CREDENTIAL_HEADERS]
    hits: dict[str, Hit] = {}

    def look(kind: str, location: str, data: bytes) -> None:
        if rules.scan(kind, data):
            for rule in rules.hits(kind, data):
                hits.setdefault(rule.id, Hit(rule, location))

    look(RAW, "target", target)
    # Split at the first `?` only and keep any `#`: Go's ParseRequestURI (Ollama) does
    # not cut a fragment from a request target, so it reaches the engine.
    path, _, query = request.path.partition("?")
    look(PATH, "path", _bytes(decode_repeatedly(path)))
    if query:
        look(QUERY, "query", _bytes(decode_repeatedly(query, plus_is_space=True)))
    # One pass over all values, one per line; each value alone only if it found something.
    if headers and rules.scan(HEADERS, b"\n".join(value for _, value in headers)):
        for name, value in headers:
            look(HEADERS, _header_location(name), value)
    if rules.reads(USER_AGENT):
        for name, value in headers:
            if name.lower() == b"user-agent":
                look(USER_AGENT, "header:user-agent", value)
    return list(hits.values())


def _bytes(decoded: str) -> bytes:
    # Bytes that were not UTF-8 in the target come back as they were sent.
    return decoded.encode("utf-8", "surrogateescape")


def action_for(hits: list[Hit], settings: IntrusionSettings) -> IntrusionAction:
    action = IntrusionAction.LOG
    for hit in hits:
        candidate = settings.actions.get(hit.rule.severity, IntrusionAction.LOG)
        if _ACTION_RANK[candidate] > _ACTION_RANK[action]:
            action = candidate
    return action


class Intrusion:
    def __init__(self) -> None:
        self._policies: Mapping[str, _Policy] = {}

    def prepare(self, runtime: Runtime) -> Mapping[str, _Policy]:
        policies = {}
        compiled: dict[frozenset[str], RuleSet] = {}
        for name, security in per_listener(runtime.loaded.config).items():
            settings = security.intrusion
            if not settings.enabled:
                continue
            disabled = frozenset(settings.disabled_rules)
            if disabled not in compiled:
                compiled[disabled] = RuleSet.without(disabled)
            policies[name] = _Policy(settings, compiled[disabled])
        return policies

    def commit(self, prepared: Mapping[str, _Policy]) -> None:
        self._policies = prepared

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or is_health_check(flow):
            return
        policy = self._policies.get(listener_name(flow) or "")
        if policy is None or not policy.rules.rules:
            return
        found = inspect(flow.request, policy.rules)
        if not found:
            return
        action = action_for(found, policy.settings)
        INTRUSION_RULES.set(flow, [hit.rule.id for hit in found])
        for hit in found:
            rule_action = policy.settings.actions.get(hit.rule.severity, IntrusionAction.LOG)
            record(
                flow,
                "intrusion.detected",
                hit.rule.severity,
                Offence.INTRUSION if rule_action is IntrusionAction.BLOCK else None,
                rule=hit.rule.id,
                category=hit.rule.category,
                location=hit.location,
                action=action.value,
                method=flow.request.method,
                path=flow.request.path.split("?", 1)[0][:200],
            )
        if action is IntrusionAction.LOG:
            return
        status = policy.settings.reject_status
        flow.response = error_response(
            status,
            "The request was rejected by the gateway's intrusion detection.",
            code="request_rejected",
        )
