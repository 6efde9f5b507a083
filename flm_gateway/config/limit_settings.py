"""`server.limits`: what a client may cost the gateway before it has proved anything.

Every byte, second and connection the gateway spends on a request before it is
authenticated is bounded here, like nginx's `large_client_header_buffers`,
`client_header_timeout`, `client_body_timeout`, `keepalive_timeout` and
`limit_conn`. The defaults and how they compare with nginx are in
docs/security.md ("Bounded work before authentication").
"""

from __future__ import annotations

from pydantic import Field

from flm_gateway.config.types import ByteSize, Duration, StrictModel


class ConnectionLimits(StrictModel):
    """Limits on request heads, connection timeouts and connections per client."""

    max_head_size: ByteSize = Field(
        32 * 1024,
        ge=1024,
        description=(
            "Largest request head (request line and every header line); a larger one gets "
            "431 and the connection is closed. nginx: 4 buffers of 8k."
        ),
    )
    max_url_length: ByteSize = Field(
        8 * 1024,
        ge=256,
        description="Longest request line (method, URL, version); a longer one gets 414.",
    )
    max_header_line: ByteSize = Field(
        8 * 1024,
        ge=256,
        description="Longest single header line; a longer one gets 431.",
    )
    max_headers: int = Field(
        100, ge=8, le=10_000, description="Most header lines in one request; more get 431."
    )
    header_timeout: Duration = Field(
        20.0,
        gt=0,
        description=(
            "Time a client has to send a whole request head, counted from its first byte (or "
            "from the connection's start); then 408 and the connection is closed."
        ),
    )
    body_timeout: Duration = Field(
        60.0,
        gt=0,
        description=(
            "Longest pause between two reads of a request body; then 408 and the connection "
            "is closed (as nginx's client_body_timeout, not a limit on the whole upload)."
        ),
    )
    idle_timeout: Duration = Field(
        75.0,
        gt=0,
        description="How long a keep-alive connection may wait for its next request.",
    )
    max_connections_per_client: int = Field(
        128,
        ge=0,
        description=(
            "Open connections one client address may hold; further connections are closed at "
            "once. 0: no limit. Trusted proxies (security.ip.trusted_proxies, on any listener) "
            "are exempt."
        ),
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description=(
            "Open client connections in all; further ones are closed at once. Unset: half of "
            "the open-file limit (raised to its hard limit at start) less a reserve of 64, "
            "since each client connection may need an engine connection too."
        ),
    )
