"""What the gateway needs to know about an engine kind, as one small protocol.

An adapter is stateless: it knows the paths and JSON shapes of its engine and
turns them into `ModelInfo` and `HealthReport`. It talks through the
`EngineClient` it is given, which carries the base URL, the upstream API key
and the egress (so no adapter opens sockets itself).

Health states: `running-healthy` (the engine says it is ready), `running-degraded`
(it answers HTTP but says it is not ready, answers its health or model path with
an error, or lists no model) and `unreachable` (no HTTP answer: refused, timed
out, not HTTP). Detection adds `not-found` and `installed-only`
(`flm_gateway.engines.detect`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.engines.admin_routes import AdminRoutes


@dataclass(frozen=True)
class ModelInfo:
    """One model an engine serves."""

    id: str
    context_length: int | None = None
    """Tokens per request the engine allows for it, when the engine says."""
    loaded: bool | None = None
    """In memory now (True), on disk and loaded on demand (False), or not reported (None)."""
    aliases: tuple[str, ...] = ()
    """Other names the engine accepts for this model (Ollama: `llama3` for `llama3:latest`)."""


class HealthState(StrEnum):
    HEALTHY = "running-healthy"
    DEGRADED = "running-degraded"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class HealthReport:
    """The outcome of one health check."""

    state: HealthState
    detail: str = ""
    models: tuple[ModelInfo, ...] | None = None
    """The model list, when the check fetched it anyway; None when it did not."""
    version: str | None = None
    capacity: int | None = None
    """Requests the engine processes at once, when it says (llama.cpp: `/props`
    `total_slots`); None when it does not tell."""


class EngineUnavailable(Exception):
    """The engine could not be reached or answered with an error."""


@dataclass(frozen=True)
class Reply:
    """One HTTP answer of an engine: the status and the decoded JSON body (None if not JSON)."""

    status: int
    body: Any = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class EngineClient(Protocol):
    """HTTP access to one engine (base URL, upstream key and egress applied)."""

    async def get(self, path: str) -> Reply:
        """GET base_url + path; raises EngineUnavailable when there is no HTTP answer."""
        ...

    async def get_json(self, path: str) -> Any:
        """GET base_url + path and decode JSON; raises EngineUnavailable on any failure,
        an error status included."""
        ...


class EngineAdapter(Protocol):
    """The protocol of one engine kind."""

    kind: EngineKind
    openai_prefix: str
    """Path prefix of the engine's OpenAI-compatible API, e.g. "/v1"."""
    default_port: int | None
    """The port the engine listens on by default (for detection); None: no default."""
    program: str | None
    """The engine's program name on PATH (for detection); None: none to look for."""
    stream_usage: bool
    """The engine honours `stream_options.include_usage` on its OpenAI streams."""
    admin_routes: AdminRoutes
    """The engine's admin and management routes, from its own route table: refused on
    passthrough listeners unless `allow_admin_endpoints: true`."""

    async def list_models(self, client: EngineClient) -> list[ModelInfo]:
        """The models the engine serves now; raises EngineUnavailable."""
        ...

    async def check_health(self, client: EngineClient) -> HealthReport:
        """Probe the engine's own health signal; never raises."""
        ...


def error_message(body: Any) -> str | None:
    """The message of an OpenAI-style (or llama.cpp) error body, if there is one."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return None


def answered(path: str, reply: Reply) -> str:
    """A short description of an unexpected answer, for health details."""
    message = error_message(reply.body)
    return f"GET {path} answered {reply.status}" + (f" ({message})" if message else "")


async def health_get(
    client: EngineClient,
    path: str,
    degraded: Callable[[str, Reply], str] = answered,
) -> Reply | HealthReport:
    """The opening of every adapter's health check: GET `path`. The engine's 2xx reply,
    or the report saying why there is none: unreachable (no HTTP answer), or degraded with
    `degraded(path, reply)` as its detail (an HTTP error)."""
    try:
        reply = await client.get(path)
    except EngineUnavailable as exc:
        return HealthReport(HealthState.UNREACHABLE, str(exc))
    if not reply.ok:
        return HealthReport(HealthState.DEGRADED, degraded(path, reply))
    return reply


async def optional_json(client: EngineClient, path: str) -> Any:
    """The JSON answer to GET `path`, or None when there is none: for what a health check or
    a model list can do without (a version, slot use, the loaded models)."""
    try:
        return await client.get_json(path)
    except EngineUnavailable:
        return None


def text_field(payload: Any, key: str) -> str | None:
    """`payload[key]` when `payload` is a JSON object and that value is a string."""
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    """`value` when it is a positive int (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
