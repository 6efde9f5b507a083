"""The `routes:` section: which engine answers which model name."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from flm_gateway.config.types import StrictModel


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
    engine: str | list[str] = Field(
        description=(
            "Engine name, or a list of engines serving the same model (replicas, round robin "
            "among the healthy ones)."
        )
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
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Request fields applied when the client omits them (a model profile), e.g. "
            "{temperature: 0.2, max_tokens: 512}; checked like a client's fields (types, "
            "exact spelling). max_tokens, max_completion_tokens and n_predict are one "
            "setting: a default for one applies only if the client sent none. The "
            "max_tokens caps (security.request_limits, key limits) bound these defaults."
        ),
    )
    system_prompt: str | None = Field(
        None,
        description="A system message prepended to chat requests routed here.",
    )

    @property
    def engines(self) -> list[str]:
        return [self.engine] if isinstance(self.engine, str) else list(self.engine)

    @property
    def fallback_targets(self) -> list[FallbackTarget]:
        return [
            FallbackTarget(engine=item, upstream_model=None) if isinstance(item, str) else item
            for item in self.fallback
        ]
