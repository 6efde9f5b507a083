"""The adapter for each engine kind."""

from __future__ import annotations

from flm_gateway.config.engines import EngineKind
from flm_gateway.engines.base import EngineAdapter
from flm_gateway.engines.openai import OpenAIAdapter


def adapter_for(kind: EngineKind) -> EngineAdapter:
    """The adapter that speaks `kind`'s API."""
    adapter = OpenAIAdapter()
    adapter.kind = kind
    return adapter
