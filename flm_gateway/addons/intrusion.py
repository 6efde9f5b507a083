"""Intrusion detection: attack signatures in the request line and headers.

Policy (on `requestheaders`, before authentication so attackers are seen
without a key): the rules of `security.intrusion_rules` run against the path
(decoded), the raw target, the query (decoded) and header values; credential
headers are never inspected and **request bodies never are**, so prompts that
discuss SQL, shell commands or file paths pass. Every hit is recorded as
`intrusion.detected` with its rule id, category and where it matched (never
the matched value). The listener's `security.intrusion.actions` maps the
highest hit severity to an action: `log` (forward, audit only), `reject`
(answer `reject_status`, 403 by default, `request_rejected`) or `block`
(reject, and the hit counts as offence `intrusion` towards
`auto_block.intrusion_hits`). Health endpoints are not inspected.
Writes `flm.intrusion.rules` (ids hit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed
from flm_gateway.config import LoadedConfig
from flm_gateway.config.security import IntrusionAction, IntrusionSettings
from flm_gateway.errors import error_response
from flm_gateway.security.events import Offence, record
from flm_gateway.security.intrusion_rules import (
    HEADERS,
    PATH,
    QUERY,
    RAW,
    RULES,
    USER_AGENT,
    Rule,
)
from flm_gateway.security.paths import decode_repeatedly, split_target
from flm_gateway.security.policies import is_health_check, listener_name, per_listener

CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
MAX_INSPECTED = 8192
"""Characters of each inspected value (longer header values are cut, not skipped)."""
_ACTION_RANK = {IntrusionAction.LOG: 0, IntrusionAction.REJECT: 1, IntrusionAction.BLOCK: 2}


@dataclass(frozen=True)
class Hit:
    rule: Rule
    location: str


@dataclass(frozen=True)
class _Policy:
    settings: IntrusionSettings
    rules: tuple[Rule, ...]


def inspect(request: http.Request, rules: tuple[Rule, ...]) -> list[Hit]:
    """Every rule that matches `request`'s target or headers (one hit per rule)."""
    raw = request.path[:MAX_INSPECTED]
    raw_path, raw_query = split_target(raw)
    targets: list[tuple[str, str, str]] = [
        (RAW, "target", raw),
        (PATH, "path", decode_repeatedly(raw_path).lower()),
    ]
    if raw_query:
        targets.append((QUERY, "query", decode_repeatedly(raw_query, plus_is_space=True).lower()))
    for name, value in request.headers.items(multi=True):
        lname = name.lower()
        if lname in CREDENTIAL_HEADERS:
            continue
        text = value[:MAX_INSPECTED].lower()
        targets.append((HEADERS, f"header:{lname}", text))
        if lname == "user-agent":
            targets.append((USER_AGENT, "header:user-agent", text))
    hits: list[Hit] = []
    for rule in rules:
        for where, location, text in targets:
            if where in rule.where and rule.pattern.search(text):
                hits.append(Hit(rule, location))
                break
    return hits


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

    def apply_config(self, loaded: LoadedConfig) -> None:
        policies = {}
        for name, security in per_listener(loaded.config).items():
            settings = security.intrusion
            disabled = set(settings.disabled_rules)
            rules = tuple(rule for rule in RULES if rule.id not in disabled)
            policies[name] = _Policy(settings, rules if settings.enabled else ())
        self._policies = policies

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or is_health_check(flow):
            return
        policy = self._policies.get(listener_name(flow) or "")
        if policy is None or not policy.rules:
            return
        hits = inspect(flow.request, policy.rules)
        if not hits:
            return
        action = action_for(hits, policy.settings)
        flow.metadata["flm.intrusion.rules"] = [hit.rule.id for hit in hits]
        for hit in hits:
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
