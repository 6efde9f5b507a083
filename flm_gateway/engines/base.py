"""What the gateway needs to know about an engine kind, as one small protocol.

An adapter is stateless: it knows the paths and JSON shapes of its engine and
turns them into `ModelInfo` and `HealthReport`. It talks through the
`EngineClient` it is given, which carries the base URL, the upstream API key
and the egress (so no adapter opens sockets itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from flm_gateway.config.engines import EngineKind


@dataclass(frozen=True)
class ModelInfo:
    """One model an engine serves."""

    id: str
    context_length: int | None = None
    loaded: bool | None = None


class HealthState(StrEnum):
    HEALTHY = "running-healthy"
    DEGRADED = "running-degraded"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class HealthReport:
    """The outcome of one health check."""

    state: HealthState
    detail: str = ""
    models: tuple[ModelInfo, ...] = ()
    version: str | None = None


class EngineUnavailable(Exception):
    """The engine could not be reached or answered with an error."""


class EngineClient(Protocol):
    """HTTP access to one engine (base URL, upstream key and egress applied)."""

    async def get_json(self, path: str) -> Any:
        """GET base_url + path and decode JSON; raises EngineUnavailable on any failure."""
        ...

    async def get_status(self, path: str) -> int:
        """GET base_url + path and return the status; raises EngineUnavailable when unreachable."""
        ...


class EngineAdapter(Protocol):
    """The protocol of one engine kind."""

    kind: EngineKind
    openai_prefix: str
    """Path prefix of the engine's OpenAI-compatible API, e.g. "/v1"."""

    async def list_models(self, client: EngineClient) -> list[ModelInfo]:
        """The models the engine serves now."""
        ...

    async def check_health(self, client: EngineClient) -> HealthReport:
        """Probe the engine; never raises."""
        ...
