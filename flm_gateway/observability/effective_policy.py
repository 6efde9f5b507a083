"""The effective policy of a config: what the gateway enforces, as plain JSON-able data.

Like `caddy adapt`: `flm-gateway validate --effective` prints it, and the golden tests
(`tests/golden/`) pair flm.yaml files with it, so a change to what a config means shows
up as a diff a reviewer reads. Each section is computed by the very functions the
addons enforce it with, never re-derived here:
- `listeners` and `keys`: `requires_api_key` and `key_allowed_on` (the `auth` addon), the
  declared keys as `declared_record` makes them;
- `routes`: `RoutingTable.match` and `route_fallbacks` (the `model_routing` addon), the
  defaults a request of each kind gets (`RouteDefaults.fields`, as `routing.rewrite`);
- `token_caps`: `token_cap` (the `request_limits` addon), per listener, route and key;
- `cors`: `cors_policies` (the `cors` addon);
- `rate_limits`: `rate_limit_scopes` and `key_rate_limit` (the `rate_limit` addon);
- `admin_endpoints`: `refused_admin_routes` (the `passthrough` addon).
Only flm.yaml is read: keys created with `flm-gateway keys create` live in the state
store and are not shown (`flm-gateway keys list` shows them), nor is anything that
depends on the engines' health or model lists. No secret appears: key hashes, engine
URLs and `api_key`s and egress credentials are left out.

Why in `observability/`: it is a view of the gateway for its operators, and it must
reach the security, routing and engines libraries but never an addon; the layers
contract enforces exactly that for this layer (an `app/` module could import addons).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from flm_gateway.config.listener_settings import ListenerConfig, requires_api_key
from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.route_settings import Balance, RouteConfig
from flm_gateway.config.security_settings import RateLimit, RequestLimitSettings
from flm_gateway.config.state_settings import StateBackend
from flm_gateway.config.types import format_host_port
from flm_gateway.engines.registry import refused_admin_routes
from flm_gateway.routing.table import RoutingTable, is_pattern, route_fallbacks
from flm_gateway.security.cors_policy import cors_policies
from flm_gateway.security.keys import declared_record, key_allowed_on
from flm_gateway.security.policies import per_listener
from flm_gateway.security.ratelimit_scopes import key_rate_limit, rate_limit_scopes
from flm_gateway.security.token_caps import CAPPED_KINDS, token_cap
from flm_gateway.state.store import KeyRecord


def effective_policy(config: GatewayConfig) -> dict[str, Any]:
    """The effective policy of `config` (see the module docstring), as JSON-able data."""
    keys = [declared_record(key) for key in config.security.keys]
    return {
        "listeners": _listeners(config, keys),
        "keys": _keys(config, keys),
        "routes": _routes(config),
        "token_caps": _token_caps(config, keys),
        "cors": _cors(config),
        "rate_limits": _rate_limits(config, keys),
        "admin_endpoints": _admin_endpoints(config),
    }


def render_effective_policy(config: GatewayConfig) -> str:
    """`effective_policy` as JSON text: keys sorted, two-space indent, a final newline."""
    return json.dumps(effective_policy(config), indent=2, sort_keys=True) + "\n"


def _accepted(listener: ListenerConfig, keys: Sequence[KeyRecord]) -> list[str]:
    """Ids of the declared keys `listener` accepts (none where it asks for no key)."""
    if not requires_api_key(listener):
        return []
    return [key.id for key in keys if key_allowed_on(key, listener.name)]


def _listeners(config: GatewayConfig, keys: Sequence[KeyRecord]) -> dict[str, Any]:
    return {
        listener.name: {
            "bind": format_host_port(listener.bind),
            "tls": listener.tls.mode.value,
            "requires_api_key": requires_api_key(listener),
            "accepts_keys": _accepted(listener, keys),
            "serves": "openai-api"
            if listener.passthrough is None
            else f"passthrough to {listener.passthrough}",
        }
        for listener in config.listeners
    }


def _keys(config: GatewayConfig, keys: Sequence[KeyRecord]) -> dict[str, Any]:
    return {
        key.id: {
            "name": key.name,
            "accepted_on": [
                listener.name
                for listener in config.listeners
                if key.id in _accepted(listener, [key])
            ],
            "models": list(key.scopes.models),
            "routes": list(key.scopes.routes),
            "expires": None if declared.expires is None else declared.expires.isoformat(),
        }
        for declared, key in zip(config.security.keys, keys, strict=True)
    }


def _routes(config: GatewayConfig) -> dict[str, Any]:
    table = RoutingTable(config.routes)
    return {
        "table": [_route(route, table) for route in config.routes],
        "unrouted": {
            "discovery": [engine.name for engine in config.engines],
        },
    }


def _route(route: RouteConfig, table: RoutingTable) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model": route.model,
        "match": "glob" if is_pattern(route.model) else "exact",
        "engines": route.engines,
        "balance": route.balance.value,
        "upstream_model": route.upstream_model,
        "fallbacks": [
            {"engine": target.engine, "upstream_model": target.upstream_model}
            for target in route_fallbacks(route)
        ],
        "retries": route.retries.model_dump(mode="json"),
        "defaults": {
            "chat": dict(route.defaults.fields("chat")),
            "other_kinds": dict(route.defaults.fields("completions")),
        },
        "system_prompt": route.system_prompt,
    }
    if route.balance is Balance.WEIGHTED:
        entry["weights"] = dict(route.weighted_engines)
    if not is_pattern(route.model):
        winner = table.match(route.model)
        if winner is not route and winner is not None:
            entry["shadowed_by"] = winner.model
    return entry


def _token_caps(config: GatewayConfig, keys: Sequence[KeyRecord]) -> dict[str, Any]:
    security = per_listener(config)
    by_id = {key.id: key for key in keys}
    caps: dict[str, Any] = {}
    for listener in config.listeners:
        if listener.passthrough is not None:
            continue  # the OpenAI API is off there: no request is chat or completions
        limits = security[listener.name].request_limits
        caps[listener.name] = {
            **_caps_of(config.routes, limits, None),
            "keys": {
                key_id: _caps_of(config.routes, limits, by_id[key_id])
                for key_id in _accepted(listener, keys)
            },
        }
    return {"applies_to": sorted(CAPPED_KINDS), "listeners": caps}


def _caps_of(
    routes: Sequence[RouteConfig], limits: RequestLimitSettings, key: KeyRecord | None
) -> dict[str, Any]:
    """The caps of requests made with `key` (None: without one, or with a key that sets no
    max_tokens): for a model no route matches, and per route."""
    return {
        "unrouted": token_cap(limits, None, key),
        "routes": {route.model: token_cap(limits, route, key) for route in routes},
    }


def _cors(config: GatewayConfig) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name, policy in cors_policies(config).items():
        if not policy.enabled:
            shown[name] = {"enabled": False}
            continue
        origins = sorted(policy.exact) + [
            f"{scheme}://*{suffix}" for scheme, suffix in sorted(policy.wildcards)
        ]
        shown[name] = {
            "enabled": True,
            "allow_origins": (["*"] if policy.any_origin else []) + origins,
            "allow_methods": sorted(policy.methods),
            "allow_headers": list(policy.header_patterns),
            "expose_headers": policy.expose,
            "allow_credentials": policy.credentials,
            "max_age": policy.max_age,
        }
    return shown


def _limit(limit: RateLimit) -> dict[str, Any]:
    return limit.model_dump(mode="json")


def _rate_limits(config: GatewayConfig, keys: Sequence[KeyRecord]) -> dict[str, Any]:
    scope_of = rate_limit_scopes(config)
    scopes: dict[str, Any] = {}
    for listener in config.listeners:
        scope = scope_of[listener.name]
        entry = scopes.setdefault(
            scope.name,
            {
                "listeners": [],
                "per_ip": _limit(scope.settings.per_ip),
                "per_key": _limit(scope.settings.per_key),
                "keys": {},
            },
        )
        entry["listeners"].append(listener.name)
        for key in keys:
            if key.id in _accepted(listener, [key]):
                entry["keys"][key.id] = _limit(key_rate_limit(scope.settings.per_key, key))
    return {
        "shared_across_replicas": config.state.backend is StateBackend.REDIS,
        "ipv6_prefix": config.security.ipv6_prefix,
        "scopes": scopes,
    }


def _admin_endpoints(config: GatewayConfig) -> dict[str, Any]:
    refused = refused_admin_routes(config)
    kinds = {engine.name: engine.kind for engine in config.engines}
    shown: dict[str, Any] = {}
    for listener in config.listeners:
        if listener.passthrough is None:
            continue
        routes = refused.get(listener.name)
        shown[listener.name] = {
            "engine": listener.passthrough,
            "kind": kinds[listener.passthrough].value,
            "allow_admin_endpoints": listener.allow_admin_endpoints,
            "refused": [
                {
                    "path": route.path,
                    "what": route.what,
                    "open_methods": sorted(route.open_methods),
                }
                for route in sorted(routes.routes if routes else (), key=lambda r: r.path)
            ],
        }
    return shown
