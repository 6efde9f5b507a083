"""The `engines:` section: the inference servers behind the gateway."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from flm_gateway.config.types import Duration, StrictModel, http_url_parts


class EngineKind(StrEnum):
    OLLAMA = "ollama"
    VLLM = "vllm"
    LMSTUDIO = "lmstudio"
    LLAMACPP = "llamacpp"
    OPENAI = "openai"


class HealthCheckSettings(StrictModel):
    """How often and how patiently the gateway checks an engine."""

    interval: Duration = Field(10.0, description="Time between health checks of a healthy engine.")
    timeout: Duration = Field(
        3.0,
        description=(
            "Time each request of a health check (health path, model list) may take before "
            "it fails."
        ),
    )
    models_refresh: Duration = Field(
        30.0, description="Time between refreshes of the engine's model list."
    )
    max_fails: int = Field(
        3,
        ge=0,
        le=1000,
        description=(
            "Passive health: this many failed requests in a row (connect, disconnected, 5xx, "
            "timeout) take the engine out of rotation for fail_timeout (0: never)."
        ),
    )
    fail_timeout: Duration = Field(
        10.0,
        description=(
            "How long an engine stays out after max_fails; then a health check (the half-open "
            "probe) must pass before it gets requests again."
        ),
    )


class TimeoutSettings(StrictModel):
    """Limits on talking to an engine."""

    connect: Duration = Field(
        5.0, description="Time to open a TCP connection to the engine before it counts as down."
    )
    response: Duration = Field(
        600.0,
        description=(
            "Time to wait for the response headers; non-streaming completions send them only "
            "when generation is done, so keep this generous."
        ),
    )


class EngineConfig(StrictModel):
    """One inference server the gateway forwards to."""

    name: str = Field(description="A unique name, used by routes, logs and /v1/models owned_by.")
    kind: EngineKind = Field(
        EngineKind.OPENAI,
        description="ollama, vllm, lmstudio, llamacpp, or openai (any OpenAI-compatible server).",
    )
    url: str = Field(
        description=(
            "Base URL of the engine, e.g. http://127.0.0.1:11434, without /v1 (a /v1 suffix "
            "is removed, with a warning: the gateway adds it)."
        ),
    )
    api_key: str | None = Field(
        None,
        description=(
            "Key sent upstream as Authorization: Bearer. Use ${VAR} to take it from the "
            "environment. The client's own credentials never reach an engine."
        ),
    )
    models: list[str] = Field(
        default_factory=list,
        description=(
            "Models this engine serves, in addition to the ones it lists itself; useful for "
            "engines whose model list cannot be fetched."
        ),
    )
    health: HealthCheckSettings = Field(
        default_factory=HealthCheckSettings, description="Health check schedule."
    )
    timeouts: TimeoutSettings = Field(
        default_factory=TimeoutSettings, description="Connect and response timeouts."
    )
    egress: str | None = Field(
        None,
        description=(
            "Name of the egress profile (under egress:) used to reach this engine: requests, "
            "health checks and model lists. Default: egress.default (direct unless set)."
        ),
    )

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = http_url_parts(value)
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: an engine URL has no query or fragment")
        if "@" in parts.netloc:
            # never echo the value: it holds a credential
            raise ValueError("an engine URL carries no user or password; use api_key")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port") from None
        return value.rstrip("/")
