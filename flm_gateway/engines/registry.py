"""The adapter for each engine kind: one module per kind, one instance each (adapters are
stateless)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.engines.adapter import EngineAdapter
from flm_gateway.engines.llamacpp import LlamaCppAdapter
from flm_gateway.engines.lmstudio import LmStudioAdapter
from flm_gateway.engines.ollama import OllamaAdapter
from flm_gateway.engines.openai import OpenAIAdapter
from flm_gateway.engines.vllm import VllmAdapter

ADAPTERS: Mapping[EngineKind, EngineAdapter] = MappingProxyType(
    {
        EngineKind.OLLAMA: OllamaAdapter(),
        EngineKind.VLLM: VllmAdapter(),
        EngineKind.LMSTUDIO: LmStudioAdapter(),
        EngineKind.LLAMACPP: LlamaCppAdapter(),
        EngineKind.OPENAI: OpenAIAdapter(),
    }
)


def adapter_for(kind: EngineKind) -> EngineAdapter:
    """The adapter that speaks `kind`'s API."""
    return ADAPTERS[kind]
