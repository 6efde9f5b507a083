"""The `request_log:` section: one record per request in the state database."""

from __future__ import annotations

from pydantic import Field

from flm_gateway.config.types import Duration, StrictModel


class RequestLogConfig(StrictModel):
    """The request log searched by `flm-gateway logs`."""

    enabled: bool = Field(True, description="Record one line per request.")
    retention: Duration = Field(
        7 * 86400.0,
        description="How long records are kept (e.g. 24h, 7d, 30d); older ones are deleted.",
    )
    max_queue: int = Field(
        10000,
        ge=100,
        description=(
            "Records waiting to be written; beyond this, new records are dropped (and counted "
            "in flm_request_log_dropped_total) rather than slowing requests down."
        ),
    )
