"""The policy sections of `security:`: IP lists, auto-block, CORS, rate limits, request
limits, intrusion detection, honeypots, anomaly detection and resource protection.

`security.py` assembles them (with the API keys) into `SecurityConfig` and the
per-listener `ListenerSecurity`.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Discriminator, Field, Tag, field_validator

from flm_gateway.config.types import ByteSize, Duration, StrictModel
from flm_gateway.core.severity import Severity

DEFAULT_HONEYPOTS = (
    "/.env",
    "/.git/config",
    "/wp-admin",
    "/wp-login.php",
    "/phpmyadmin",
    "/.aws/credentials",
    "/server-status",
    "/actuator/env",
)


def normalise_network(value: str) -> str:
    """A CIDR or single address, normalised (`10.0.0.1/8` -> `10.0.0.0/8`)."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)"
        ) from None


Cidr = Annotated[str, AfterValidator(normalise_network)]


class IntrusionAction(StrEnum):
    LOG = "log"
    REJECT = "reject"
    BLOCK = "block"


class IpSettings(StrictModel):
    """Which client addresses may connect, and whose X-Forwarded-For is believed."""

    allow: list[Cidr] = Field(
        default_factory=list,
        description="If not empty, only these addresses/CIDRs are served; others get 403.",
    )
    block: list[Cidr] = Field(
        default_factory=list,
        description="Addresses/CIDRs always refused with 403 (besides the stored block list).",
    )
    trusted_proxies: list[Cidr] = Field(
        default_factory=list,
        description=(
            "Reverse proxies in front of the gateway. Only when the peer is one of them is "
            "X-Forwarded-For used to find the client address (its right-most untrusted entry)."
        ),
    )


class AutoBlockSettings(StrictModel):
    """Blocking clients automatically after repeated offences within a window."""

    enabled: bool = Field(True, description="Off: offences are audited but nobody is blocked.")
    auth_failures: int = Field(
        5, ge=0, description="Failed authentications (wrong key) per window that block; 0: never."
    )
    intrusion_hits: int = Field(
        3, ge=0, description="Intrusion rule hits with action `block` per window; 0: never."
    )
    honeypot_hits: int = Field(1, ge=0, description="Honeypot requests per window; 0: never.")
    anomalies: int = Field(
        0, ge=0, description="Anomalies detected per window that block; 0: anomalies never block."
    )
    window: Duration = Field(60.0, description="The window offences are counted in.")
    duration: Duration = Field(600.0, description="How long the first block lasts.")
    growth: float = Field(
        2.0, ge=1.0, description="Each repeat block of the same address lasts this much longer."
    )
    max_duration: Duration = Field(7 * 86400.0, description="The longest a block grows to.")
    remember: Duration = Field(
        7 * 86400.0,
        description="How long after a block expired a new one still counts as a repeat.",
    )
    count_missing_keys: bool = Field(
        False,
        description=(
            "Count requests without any key as auth failures too (by default only wrong "
            "keys count: a client missing its key, or holding an expired or revoked one, "
            "is not guessing)."
        ),
    )
    never_block: list[Cidr] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description=(
            "Addresses/CIDRs auto-block never blocks (like fail2ban's ignoreip): their "
            "offences are still counted and audited, and reaching a threshold records "
            "`ip.not_blocked` instead of a block. Default: loopback. A list replaces the "
            "default (keep loopback in it); [] blocks everyone. Static and manual blocks "
            "still apply."
        ),
    )


class CorsSettings(StrictModel):
    """Cross-origin access from browsers."""

    allow_origins: list[str] = Field(
        default_factory=list,
        description=(
            "Origins allowed: exact (https://app.example.com), wildcard "
            "(https://*.example.com) or * (any). Empty: no CORS headers for anyone."
        ),
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "OPTIONS"],
        description="Methods a preflight may approve.",
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: [
            "authorization",
            "content-type",
            "x-api-key",
            "x-request-id",
            "openai-organization",
            "openai-project",
            "x-stainless-*",
        ],
        description="Request headers a preflight may approve; a trailing * matches a prefix.",
    )
    expose_headers: list[str] = Field(
        default_factory=lambda: [
            "x-request-id",
            "retry-after",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ],
        description="Response headers browser scripts may read.",
    )
    allow_credentials: bool = Field(
        False, description="Send Access-Control-Allow-Credentials: true (never with origin *)."
    )
    max_age: Duration = Field(600.0, description="How long browsers may cache a preflight.")

    @field_validator("allow_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            if not re.match(r"^https?://(\*\.)?[A-Za-z0-9.\-\[\]:]+$", origin):
                raise ValueError(
                    f"{origin!r} is not an origin (scheme://host[:port], e.g. "
                    "https://app.example.com or https://*.example.com, no path)"
                )
        return value


class RateLimit(StrictModel):
    """Requests and tokens per minute for one client (an IP or a key)."""

    requests_per_minute: int | None = Field(
        None, ge=1, description="Steady request rate; unset: unlimited."
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        description=(
            "Prompt plus completion tokens per minute, charged when a response ends; a "
            "client over it is refused until the debt refills. Unset: unlimited."
        ),
    )
    burst: int | None = Field(
        None,
        ge=1,
        description=(
            "Requests accepted at once before the steady rate applies; default: "
            "requests_per_minute (a full minute's worth)."
        ),
    )


class RateLimitSettings(StrictModel):
    """Rate limits per client address and per API key; both apply."""

    per_ip: RateLimit = Field(default_factory=RateLimit, description="Per client address.")
    per_key: RateLimit = Field(
        default_factory=RateLimit, description="Per API key (a key's limits override it)."
    )


class RequestLimitSettings(StrictModel):
    """Limits on the shape of a request."""

    max_body_size: ByteSize | None = Field(
        None,
        description=(
            "Largest request body on this listener, 413 above it; default: "
            "server.body_size_limit (which also caps this)."
        ),
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        description=(
            "Largest number of tokens a chat or completions request may generate, all "
            "choices (n, best_of) together: asking for more is 400. A request that asks "
            "for none gets the cap (or its route's smaller default) divided by its choices."
        ),
    )
    max_tokens_per_route: dict[str, int] = Field(
        default_factory=dict,
        description="Per route (by its `model` value in routes:), a max_tokens cap.",
    )
    allowed_paths: list[str] | None = Field(
        None,
        description=(
            "If set, the only paths served (exact, or globs such as /v1/models*); others get "
            "404. Health endpoints are always served."
        ),
    )


class IntrusionSettings(StrictModel):
    """Signature-based detection on the request line and headers (never on bodies)."""

    enabled: bool = Field(True, description="Off: no request is inspected.")
    actions: dict[Severity, IntrusionAction] = Field(
        default_factory=lambda: {
            Severity.LOW: IntrusionAction.LOG,
            Severity.MEDIUM: IntrusionAction.REJECT,
            Severity.HIGH: IntrusionAction.BLOCK,
            Severity.CRITICAL: IntrusionAction.BLOCK,
        },
        description=(
            "Per rule severity: log (audit only), reject (refuse), block (refuse and count "
            "towards auto_block.intrusion_hits). Missing severities: log."
        ),
    )
    reject_status: Literal[400, 403] = Field(403, description="Status of a rejected request.")
    disabled_rules: list[str] = Field(
        default_factory=list, description="Rule ids to skip (see docs/security.md)."
    )


def _honeypot_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r}: a honeypot path starts with /")
    return path


HoneypotPath = Annotated[str, AfterValidator(_honeypot_path)]


class HoneypotSettings(StrictModel):
    """Decoy paths: answered with something plausible, never forwarded, caller auto-blocked."""

    paths: list[HoneypotPath] = Field(
        default_factory=lambda: list(DEFAULT_HONEYPOTS),
        description="Paths (and everything below them), matched case-insensitively.",
    )


Honeypots = Annotated[
    Annotated[list[HoneypotPath], Tag("paths")] | Annotated[HoneypotSettings, Tag("settings")],
    Discriminator(lambda value: "paths" if isinstance(value, list) else "settings"),
]
"""`honeypots:` is a list of paths, or the full settings object."""


class AnomalySettings(StrictModel):
    """Statistical detection per client address and per key; findings go to the audit log."""

    enabled: bool = Field(True, description="Off: no anomaly detection.")
    window: Duration = Field(60.0, description="The window rates and churn are measured in.")
    spike_factor: float = Field(
        5.0, gt=1.0, description="A window with this many times the moving baseline is a spike."
    )
    spike_min_requests: int = Field(
        60, ge=1, description="Windows with fewer requests are never a spike."
    )
    error_burst: int = Field(30, ge=1, description="4xx answers per window that are a burst.")
    model_churn: int = Field(10, ge=1, description="Distinct models per window that are churn.")
    user_agent_churn: int = Field(
        5, ge=1, description="Distinct User-Agents per window that are churn."
    )


class EngineConcurrency(StrictModel):
    """Concurrency cap of one engine."""

    max_concurrent: int = Field(ge=1, description="Requests in flight to this engine at most.")
    max_queue: int | None = Field(None, ge=0, description="Requests waiting; default: global.")
    queue_timeout: Duration | None = Field(None, description="Longest wait; default: global.")


class ResourceSettings(StrictModel):
    """Load shedding under CPU/memory pressure, and per-engine concurrency caps."""

    max_host_cpu_percent: float | None = Field(
        None, gt=0, le=100, description="Shed new requests above this host CPU use; unset: off."
    )
    max_host_memory_percent: float | None = Field(
        None, gt=0, le=100, description="Shed new requests above this host memory use."
    )
    max_process_cpu_percent: float | None = Field(
        None, gt=0, description="Shed new requests above this gateway process CPU use."
    )
    max_process_memory: ByteSize | None = Field(
        None, description="Shed new requests above this gateway resident memory (e.g. 1GiB)."
    )
    sample_interval: Duration = Field(1.0, description="How often usage is sampled.")
    retry_after: Duration = Field(5.0, description="Retry-After of a shed request.")
    max_concurrent_per_engine: int | None = Field(
        None,
        ge=1,
        description=(
            "Requests in flight to any one engine; unset: the engine's own capacity when "
            "it reports one (llama.cpp: /props total_slots), else unlimited."
        ),
    )
    max_queue_per_engine: int = Field(
        64, ge=0, description="Requests that may wait for a busy engine; more get 503."
    )
    queue_timeout: Duration = Field(30.0, description="Longest wait for a busy engine; then 503.")
    engines: dict[str, EngineConcurrency] = Field(
        default_factory=dict, description="Per engine name, its own cap."
    )
