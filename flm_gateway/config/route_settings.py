"""The `routes:` section: which engine answers which model name."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from flm_gateway.config.sampling_settings import RouteDefaults
from flm_gateway.config.types import Duration, StrictModel


class Balance(StrEnum):
    """How a route spreads requests over its engines (replicas)."""

    ROUND_ROBIN = "round_robin"
    LEAST_BUSY = "least_busy"
    LATENCY = "latency"
    WEIGHTED = "weighted"


class RetryCondition(StrEnum):
    """A failure a request may be retried on (before any byte reached the client)."""

    CONNECT = "connect"
    DISCONNECTED = "disconnected"
    HTTP_5XX = "5xx"
    TIMEOUT = "timeout"


class WeightedEngine(StrictModel):
    """A replica with its share of the traffic under `balance: weighted`."""

    engine: str = Field(description="Engine name.")
    weight: int = Field(
        1, ge=1, le=1000, description="Relative share of requests (balance: weighted)."
    )


class RetrySettings(StrictModel):
    """When and how often a failed request is sent again, to the next candidate engine."""

    attempts: int = Field(
        3,
        ge=1,
        le=10,
        description=(
            "Tries in all, the first included (1: never retry). Each retry goes to the next "
            "candidate: another replica, then the fallbacks."
        ),
    )
    when: list[RetryCondition] = Field(
        default_factory=lambda: [
            RetryCondition.CONNECT,
            RetryCondition.DISCONNECTED,
            RetryCondition.HTTP_5XX,
        ],
        description=(
            "Failures that are retried: connect (refused, reset, timed out, egress failed), "
            "disconnected (closed before the response head), 5xx (a 5xx response head), "
            "timeout (no response head within the engine's timeouts.response; not by "
            "default: a request that outlasts one engine's timeout would run on every "
            "replica in turn). Only before the first byte reaches the client."
        ),
    )
    backoff: Duration = Field(
        0.0,
        description=(
            "Wait before each retry, doubling each time (0: at once). With a backoff, engines "
            "that answered 5xx, timed out or disconnected are tried again once every candidate "
            "was tried, until attempts run out."
        ),
    )

    @field_validator("when")
    @classmethod
    def _no_duplicates(cls, value: list[RetryCondition]) -> list[RetryCondition]:
        if len(set(value)) != len(value):
            raise ValueError("a condition is listed twice")
        return value


class FallbackTarget(StrictModel):
    """A fallback engine with the model name it should be asked for."""

    engine: str = Field(description="Engine name.")
    upstream_model: str | None = Field(
        None,
        description="Model name sent to this engine; default: the route's upstream_model.",
    )


class RouteConfig(StrictModel):
    """Maps model names clients ask for onto an engine (and optional fallbacks)."""

    model: str = Field(
        description=(
            "The model name clients send; a glob (tiny-*, llama3:*) matches many. Routes are "
            "tried in file order and the first match wins."
        )
    )
    engine: str | list[str | WeightedEngine] = Field(
        description=(
            "Engine name, or a list of engines serving the same model (replicas, spread by "
            "`balance`); an item may be {engine, weight}."
        )
    )
    balance: Balance = Field(
        Balance.ROUND_ROBIN,
        description=(
            "How requests are spread over the healthy replicas: round_robin, least_busy (fewest "
            "requests in flight), latency (fastest recent response heads, trying the others now "
            "and then) or weighted (by each item's weight, smoothly interleaved)."
        ),
    )
    retries: RetrySettings = Field(
        default_factory=RetrySettings,
        description="Retries on the next candidate when an engine fails before answering.",
    )
    upstream_model: str | None = Field(
        None, description="The model name sent to the engine; default: the name the client sent."
    )
    fallback: list[str | FallbackTarget] = Field(
        default_factory=list,
        description=(
            "Engines tried in order when the route's engines are down or answer 5xx before any "
            "byte of the response: a name (asked for the route's upstream model if it serves "
            "it, else for the first model it lists), or {engine, upstream_model}."
        ),
    )
    defaults: RouteDefaults = Field(
        default_factory=RouteDefaults,
        description=(
            "Request fields applied when the client omits them (a model profile), e.g. "
            "{temperature: 0.2, max_tokens: 512}: OpenAI's sampling fields, typed and bounded; "
            "engine-specific ones under extra. The max_tokens caps (security.request_limits, "
            "key limits) bound these defaults."
        ),
    )
    system_prompt: str | None = Field(
        None,
        description="A system message prepended to chat requests routed here.",
    )

    @property
    def engines(self) -> list[str]:
        return [name for name, _ in self.weighted_engines]

    @property
    def weighted_engines(self) -> list[tuple[str, int]]:
        """(engine name, weight) of each replica, in file order."""
        if isinstance(self.engine, str):
            return [(self.engine, 1)]
        return [
            (item, 1) if isinstance(item, str) else (item.engine, item.weight)
            for item in self.engine
        ]

    @property
    def fallback_targets(self) -> list[FallbackTarget]:
        return [
            FallbackTarget(engine=item, upstream_model=None) if isinstance(item, str) else item
            for item in self.fallback
        ]
