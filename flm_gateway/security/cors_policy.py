"""A listener's CORS policy, precomputed from `security.cors`: which origins, methods and
headers a browser may use.

Origins match exactly (scheme, host and port, case-insensitive host) or by a
`scheme://*.domain` wildcard (any subdomain, never the bare domain); `*` allows any.
The `cors` addon enforces it (preflights, refusals, response headers); the
effective-policy report (`flm-gateway validate --effective`) prints the same
`CorsPolicy` per listener, through `cors_policies`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.security_settings import CorsSettings
from flm_gateway.security.policies import per_listener

_ORIGIN_RE = re.compile(r"^(https?)://([a-z0-9.\-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$")


@dataclass(frozen=True)
class CorsPolicy:
    any_origin: bool
    exact: frozenset[str]
    wildcards: tuple[tuple[str, str], ...]
    """(scheme, ".domain[:port]") pairs from scheme://*.domain[:port]."""
    methods: frozenset[str]
    header_patterns: tuple[str, ...]
    expose: str
    credentials: bool
    max_age: str

    @classmethod
    def from_settings(cls, settings: CorsSettings) -> CorsPolicy:
        exact: set[str] = set()
        wildcards: list[tuple[str, str]] = []
        for origin in settings.allow_origins:
            if origin == "*":
                continue
            scheme, _, rest = origin.lower().partition("://")
            if rest.startswith("*."):
                wildcards.append((scheme, rest[1:]))
            else:
                exact.add(f"{scheme}://{rest}")
        return cls(
            any_origin="*" in settings.allow_origins,
            exact=frozenset(exact),
            wildcards=tuple(wildcards),
            methods=frozenset(m.upper() for m in settings.allow_methods),
            header_patterns=tuple(h.lower() for h in settings.allow_headers),
            expose=", ".join(settings.expose_headers),
            credentials=settings.allow_credentials,
            max_age=str(math.ceil(settings.max_age)),
        )

    @property
    def enabled(self) -> bool:
        return self.any_origin or bool(self.exact) or bool(self.wildcards)

    def allows_origin(self, origin: str) -> bool:
        normal = origin.strip().lower()
        if not _ORIGIN_RE.match(normal):
            return False
        if self.any_origin or normal in self.exact:
            return True
        scheme, _, rest = normal.partition("://")
        return any(
            scheme == w_scheme and rest.endswith(suffix) and len(rest) > len(suffix)
            for w_scheme, suffix in self.wildcards
        )

    def allows_header(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.header_patterns)

    def allow_origin_value(self, origin: str) -> str:
        return "*" if self.any_origin and not self.credentials else origin


def cors_policies(config: GatewayConfig) -> Mapping[str, CorsPolicy]:
    """Listener name -> its CORS policy (its own `security.cors`, else the global one)."""
    return {
        name: CorsPolicy.from_settings(security.cors)
        for name, security in per_listener(config).items()
    }
