"""The `admin:` section: the operators' listener for /metrics, /healthz and /readyz.

It is a separate socket from every API listener, so metrics never reach API
clients. It stays on loopback unless `allow_remote: true` says otherwise.
"""

from __future__ import annotations

from pydantic import Field

from flm_gateway.config.types import HostPattern, HostPort, StrictModel

DEFAULT_ADMIN_BIND = "127.0.0.1:9090"


class AdminConfig(StrictModel):
    """The admin listener: Prometheus metrics and health endpoints, no API traffic."""

    enabled: bool = Field(True, description="Serve the admin listener at all.")
    bind: HostPort = Field(
        DEFAULT_ADMIN_BIND,  # parsed like a value from the file
        validate_default=True,
        description=(
            "Address of the admin listener, host:port. It serves GET /metrics, /healthz and "
            "/readyz without authentication, so keep it on loopback or a private network."
        ),
    )
    hosts: list[HostPattern] = Field(
        default_factory=list,
        description=(
            "More names scrapers may send as Host (e.g. the compose service name), as a "
            "listener's hosts:. Always accepted: localhost and the bind address (every IP "
            "address for 0.0.0.0 and [::]); any other Host is answered 421."
        ),
    )
    allow_remote: bool = Field(
        False,
        description=(
            "Allow a bind address that other machines can reach. The admin endpoints have no "
            "authentication; set this only behind a firewall or a private network."
        ),
    )
