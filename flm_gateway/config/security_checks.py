"""Cross-field rules of the `security:` sections (global and per listener).

Each yields (path, message) like `semantic.py`. They catch settings that would
silently do nothing or less than the file says: scopes naming listeners or
routes that do not exist, keys scoped to a listener that never checks keys (or
declared while no listener checks any),
per-key limits on a listener without authentication, CORS credentials with
origin `*`, a body limit above the server's, honeypots that would shadow the API.
"""

from __future__ import annotations

from collections.abc import Iterator

from flm_gateway.config.listener_settings import AuthMode, ListenerConfig, requires_api_key
from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.security_settings import (
    CorsSettings,
    HoneypotSettings,
    RequestLimitSettings,
)
from flm_gateway.core.paths import canonical_path

Problem = tuple[tuple[str | int, ...], str]
Path = tuple[str | int, ...]
RESERVED_PATHS = ("/v1", "/healthz", "/readyz")


def check_security(config: GatewayConfig) -> list[Problem]:
    return [*_keys(config), *_sections(config), *_engines(config)]


def _never_checks_keys(listener: ListenerConfig) -> str:
    if listener.auth is AuthMode.NONE:
        return "has auth: none, so it never checks keys"
    return (
        "has no auth:, so it never checks keys (a loopback listener needs auth: api-key "
        "to require them)"
    )


def _keys(config: GatewayConfig) -> Iterator[Problem]:
    if config.security.keys and not any(map(requires_api_key, config.listeners)):
        yield (
            ("security", "keys"),
            "keys are declared but no listener requires one; set auth: api-key on the "
            "listeners that should (a listener without auth: needs no key)",
        )
    listeners = {listener.name: listener for listener in config.listeners}
    routes = {route.model for route in config.routes}
    seen_ids: dict[str, int] = {}
    seen_hashes: dict[str, int] = {}
    for index, key in enumerate(config.security.keys):
        base: Path = ("security", "keys", index)
        if key.id in seen_ids:
            yield (
                (*base, "id"),
                f"{key.id!r} is already the id of security.keys[{seen_ids[key.id]}]",
            )
        seen_ids.setdefault(key.id, index)
        for position, digest in enumerate(key.hashes):
            if digest in seen_hashes:
                path: Path = (
                    (*base, "hash") if isinstance(key.hash, str) else (*base, "hash", position)
                )
                yield path, f"this hash already belongs to security.keys[{seen_hashes[digest]}]"
            seen_hashes.setdefault(digest, index)
        for position, name in enumerate(key.scopes.listeners):
            listener = listeners.get(name)
            path = (*base, "scopes", "listeners", position)
            if listener is None:
                yield path, f"unknown listener {name!r}; listeners: {', '.join(listeners)}"
            elif not requires_api_key(listener):
                yield path, f"listener {name!r} {_never_checks_keys(listener)}"
        for position, model in enumerate(key.scopes.routes):
            if model not in routes:
                yield (
                    (*base, "scopes", "routes", position),
                    f"no route has model {model!r}; routes are named by their model value",
                )


def _sections(config: GatewayConfig) -> Iterator[Problem]:
    """CORS, request limits and honeypots, globally and in each listener's override."""
    blocks: list[
        tuple[
            Path,
            CorsSettings | None,
            RequestLimitSettings | None,
            list[str] | HoneypotSettings | None,
        ]
    ] = [
        (
            ("security",),
            config.security.cors,
            config.security.request_limits,
            config.security.honeypots,
        )
    ]
    for index, listener in enumerate(config.listeners):
        override = listener.security
        if override is None:
            continue
        base: Path = ("listeners", index, "security")
        blocks.append((base, override.cors, override.request_limits, override.honeypots))
        if (
            listener.auth is AuthMode.NONE
            and override.rate_limits is not None
            and (
                override.rate_limits.per_key.requests_per_minute
                or override.rate_limits.per_key.tokens_per_minute
            )
        ):
            yield (
                (*base, "rate_limits", "per_key"),
                "per-key limits never apply on a listener with auth: none",
            )
    routes = {route.model for route in config.routes}
    server_limit = config.server.body_size_limit
    for base, cors, limits, honeypots in blocks:
        if cors is not None and cors.allow_credentials and "*" in cors.allow_origins:
            yield (
                (*base, "cors", "allow_credentials"),
                "browsers refuse credentials with origin '*'; list the origins instead",
            )
        if limits is not None:
            if limits.max_body_size is not None and limits.max_body_size > server_limit:
                yield (
                    (*base, "request_limits", "max_body_size"),
                    f"{limits.max_body_size} is above server.body_size_limit ({server_limit}), "
                    "which caps every request; raise that too",
                )
            for model in limits.max_tokens_per_route:
                if model not in routes:
                    yield (
                        (*base, "request_limits", "max_tokens_per_route", model),
                        f"no route has model {model!r}",
                    )
        if honeypots is not None:
            paths = honeypots.paths if isinstance(honeypots, HoneypotSettings) else honeypots
            for position, path in enumerate(paths):
                canonical = canonical_path(path)
                if canonical == "/" or any(
                    canonical == reserved
                    or canonical.startswith(reserved + "/")
                    or reserved.startswith(canonical + "/")
                    for reserved in RESERVED_PATHS
                ):
                    where: Path = (*base, "honeypots")
                    where = (
                        (*where, "paths", position)
                        if isinstance(honeypots, HoneypotSettings)
                        else (*where, position)
                    )
                    yield where, f"{path!r} would turn gateway endpoints into a decoy"


def _engines(config: GatewayConfig) -> Iterator[Problem]:
    names = {engine.name for engine in config.engines}
    for name in config.security.resources.engines:
        if name not in names:
            yield (
                ("security", "resources", "engines", name),
                f"unknown engine {name!r}; defined engines: {', '.join(sorted(names)) or 'none'}",
            )
