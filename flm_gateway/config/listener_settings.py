"""The `listeners:` section: where the gateway accepts clients and how.

Which listeners require an API key is decided by flm.yaml alone (`requires_api_key`),
never by whether keys exist: `auth: api-key` always, `auth: none` never, and a
listener without `auth:` only on loopback, where it needs no key (validation refuses
a non-loopback listener without `auth:`). Creating or revoking a key changes no
listener; the start log, `validate` and `keys create` say where keys are required
(`auth_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import Field

from flm_gateway.config.security_settings import ListenerSecurity
from flm_gateway.config.tls_settings import TlsSettings
from flm_gateway.config.types import HostPattern, HostPort, StrictModel, is_loopback_host


class AuthMode(StrEnum):
    API_KEY = "api-key"
    NONE = "none"


class ListenerConfig(StrictModel):
    """One socket the gateway accepts clients on, serving the OpenAI-compatible API."""

    name: str = Field(description="A unique name, used in logs, metrics and key scopes.")
    bind: HostPort = Field(
        description=(
            "Address to listen on: an IP address or localhost, and a port: 127.0.0.1:8088, "
            "[::1]:8088, 0.0.0.0:8088 (every IPv4 address) or [::]:8088 (every address, IPv4 "
            "too). Listeners may share a port on different addresses, never an address."
        )
    )
    tls: TlsSettings = Field(default_factory=TlsSettings, description="TLS mode of this listener.")
    hosts: list[HostPattern] = Field(
        default_factory=list,
        description=(
            "More names clients may send as Host (the DNS-rebinding defence): exact names "
            "(gateway.example.com), *.example.com (its subdomains), IP addresses, or * (any "
            "Host: the defence is off). Always accepted: localhost, the bind address (every IP "
            "address for 0.0.0.0 and [::]) and the TLS names. Any other Host is answered 421."
        ),
    )
    auth: AuthMode | None = Field(
        None,
        description=(
            "api-key: clients must send an API key. none: no authentication. Unset: none, "
            "allowed on loopback binds only (a listener other machines can reach must say "
            "which). Creating keys never changes it: set api-key where keys are required."
        ),
    )
    passthrough: str | None = Field(
        None,
        description=(
            "Name of one engine that receives every path unchanged (drop-in fronting of an "
            "engine's native API). The OpenAI routing is off on such a listener."
        ),
    )
    allow_admin_endpoints: bool = Field(
        False,
        description=(
            "With passthrough: allow the engine's admin and management endpoints (Ollama's "
            "pull, push, create, copy, delete, blobs and account routes; vLLM's LoRA, sleep, "
            "cache and RPC routes; llama.cpp's slots, LoRA and POST /props; LM Studio's model "
            "load, unload and download; docs/engines.md lists them). Off: they are answered "
            "403."
        ),
    )
    security: ListenerSecurity | None = Field(
        None,
        description=(
            "Replaces whole sections of the global security: on this listener (ip, cors, "
            "rate_limits, request_limits, intrusion, honeypots)."
        ),
    )


_UNSET = "loopback, no auth:"


def requires_api_key(listener: ListenerConfig) -> bool:
    """Whether clients of `listener` must send an API key (see the module docstring)."""
    if listener.auth is not None:
        return listener.auth is AuthMode.API_KEY
    # validation refuses this on other addresses; should one get here, fail closed
    return not is_loopback_host(listener.bind[0])


def auth_summary(listeners: Sequence[ListenerConfig]) -> list[str]:
    """Where API keys are required and where not, one line each, for logs and the CLI."""
    keyed = [listener.name for listener in listeners if requires_api_key(listener)]
    open_ = [
        f"{listener.name} ({'auth: none' if listener.auth is AuthMode.NONE else _UNSET})"
        for listener in listeners
        if not requires_api_key(listener)
    ]
    lines = [f"API keys are required on: {', '.join(keyed) if keyed else 'no listener'}"]
    if open_:
        lines.append(f"no API key is needed on: {', '.join(open_)}")
    return lines
