"""The `security:` section: API keys and every request policy, globally and per listener.

A listener may carry its own `security:` block with any of `ip`, `cors`,
`rate_limits`, `request_limits`, `intrusion` and `honeypots`; each section it
names replaces the global section of that name for that listener (whole
sections, never merged key by key, so what applies is what one block says).
Keys, auto-block, anomaly detection and resource protection are process-wide.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import Field, field_validator

from flm_gateway.config.security_policies import (
    DEFAULT_HONEYPOTS,
    AnomalySettings,
    AutoBlockSettings,
    CorsSettings,
    EngineConcurrency,
    Honeypots,
    HoneypotSettings,
    IntrusionAction,
    IntrusionSettings,
    IpSettings,
    RateLimit,
    RateLimitSettings,
    RequestLimitSettings,
    ResourceSettings,
    normalise_network,
)
from flm_gateway.config.types import StrictModel

KEY_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
KEY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class KeyScopesConfig(StrictModel):
    """What a key may reach; an empty list means no restriction on that axis."""

    models: list[str] = Field(
        default_factory=list, description="Model names or globs (llama3*) the key may ask for."
    )
    routes: list[str] = Field(
        default_factory=list,
        description="Routes (by their `model` value in routes:) the key may use.",
    )
    listeners: list[str] = Field(
        default_factory=list, description="Listener names the key is accepted on."
    )


class KeyLimitsConfig(StrictModel):
    """Per-key overrides of the per-key rate limits and the max_tokens cap."""

    requests_per_minute: int | None = Field(None, ge=1, description="Overrides per_key.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Overrides per_key.")
    max_tokens: int | None = Field(
        None, ge=1, description="Largest max_tokens a request of this key may ask for."
    )


class DeclaredKey(StrictModel):
    """An API key declared in flm.yaml by the hash of its secret (for GitOps)."""

    id: str = Field(description="Public identifier, shown in logs and the audit log.")
    name: str | None = Field(None, description="What the key is for; default: the id.")
    hash: str | list[str] = Field(
        description=(
            "sha256:<64 hex> of the secret (`flm-gateway keys hash` prints it). A list "
            "accepts several secrets, e.g. old and new during a rotation."
        )
    )
    scopes: KeyScopesConfig = Field(
        default_factory=KeyScopesConfig, description="Models, routes and listeners it may use."
    )
    limits: KeyLimitsConfig = Field(
        default_factory=KeyLimitsConfig, description="Rate limit and max_tokens overrides."
    )
    expires: datetime | None = Field(
        None, description="When the key stops working (ISO 8601, e.g. 2026-12-31T00:00:00Z)."
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not KEY_ID_RE.match(value):
            raise ValueError(f"{value!r} is not a key id (letters, digits, _ . -; up to 64)")
        return value

    @field_validator("hash")
    @classmethod
    def _check_hash(cls, value: str | list[str]) -> str | list[str]:
        for item in [value] if isinstance(value, str) else value:
            if not KEY_HASH_RE.match(item):
                raise ValueError(
                    f"{item[:16]!r}... is not sha256:<64 lowercase hex>; "
                    "`flm-gateway keys hash` prints the hash of a secret"
                )
        if isinstance(value, list) and not value:
            raise ValueError("at least one hash is required")
        return value

    @property
    def hashes(self) -> list[str]:
        return [self.hash] if isinstance(self.hash, str) else list(self.hash)

    @property
    def expires_at(self) -> float | None:
        if self.expires is None:
            return None
        expires = self.expires if self.expires.tzinfo else self.expires.replace(tzinfo=UTC)
        return expires.timestamp()


class SecurityConfig(StrictModel):
    """Keys and policies; a listener's `security:` block may replace some sections."""

    keys: list[DeclaredKey] = Field(
        default_factory=list, description="API keys declared by hash (more via `keys create`)."
    )
    ip: IpSettings = Field(default_factory=IpSettings, description="Allow and block lists.")
    ipv6_prefix: int = Field(
        64,
        ge=32,
        le=128,
        description=(
            "IPv6 clients are one client per this prefix for per-IP rate limits, anomaly "
            "detection and auto-block (a subscriber usually holds a whole /64, so per-address "
            "limits would be trivial to evade). 128: per address."
        ),
    )
    auto_block: AutoBlockSettings = Field(
        default_factory=AutoBlockSettings, description="Automatic blocking of offenders."
    )
    cors: CorsSettings = Field(default_factory=CorsSettings, description="Browser access.")
    rate_limits: RateLimitSettings = Field(
        default_factory=RateLimitSettings,
        description=(
            "Per IP and per key; shared by all replicas when state.backend is redis, "
            "else per process."
        ),
    )
    request_limits: RequestLimitSettings = Field(
        default_factory=RequestLimitSettings, description="Body size, max_tokens, paths."
    )
    intrusion: IntrusionSettings = Field(
        default_factory=IntrusionSettings, description="Intrusion detection rules."
    )
    honeypots: Honeypots = Field(
        default_factory=HoneypotSettings,
        description="Decoy paths (a list is short for {paths: [...]}).",
    )
    anomaly: AnomalySettings = Field(
        default_factory=AnomalySettings, description="Anomaly detection."
    )
    resources: ResourceSettings = Field(
        default_factory=ResourceSettings, description="Load shedding and engine caps."
    )

    @property
    def honeypot_settings(self) -> HoneypotSettings:
        if isinstance(self.honeypots, list):
            return HoneypotSettings(paths=self.honeypots)
        return self.honeypots


class ListenerSecurity(StrictModel):
    """Per-listener replacements of whole sections of the global `security:`."""

    ip: IpSettings | None = Field(None, description="Replaces security.ip here.")
    cors: CorsSettings | None = Field(None, description="Replaces security.cors here.")
    rate_limits: RateLimitSettings | None = Field(
        None, description="Replaces security.rate_limits here."
    )
    request_limits: RequestLimitSettings | None = Field(
        None, description="Replaces security.request_limits here."
    )
    intrusion: IntrusionSettings | None = Field(
        None, description="Replaces security.intrusion here."
    )
    honeypots: Honeypots | None = Field(None, description="Replaces security.honeypots here.")


def effective_security(
    security: SecurityConfig, override: ListenerSecurity | None
) -> SecurityConfig:
    """The security that applies on a listener: the global one with its overrides."""
    if override is None:
        return security
    updates = {
        name: value
        for name in ListenerSecurity.model_fields
        if (value := getattr(override, name)) is not None
    }
    return security.model_copy(update=updates) if updates else security


__all__ = [
    "DEFAULT_HONEYPOTS",
    "AnomalySettings",
    "AutoBlockSettings",
    "CorsSettings",
    "DeclaredKey",
    "EngineConcurrency",
    "HoneypotSettings",
    "IntrusionAction",
    "IntrusionSettings",
    "IpSettings",
    "KeyLimitsConfig",
    "KeyScopesConfig",
    "ListenerSecurity",
    "RateLimit",
    "RateLimitSettings",
    "RequestLimitSettings",
    "ResourceSettings",
    "SecurityConfig",
    "effective_security",
    "normalise_network",
]
