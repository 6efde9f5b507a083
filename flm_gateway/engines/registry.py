"""The adapter for each engine kind: one module per kind, one instance each (adapters are
stateless); and the admin routes each passthrough listener refuses."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.config.model import GatewayConfig
from flm_gateway.engines.adapter import EngineAdapter
from flm_gateway.engines.admin_routes import AdminRoutes
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


def refused_admin_routes(config: GatewayConfig) -> Mapping[str, AdminRoutes]:
    """Passthrough listener name -> the admin routes of its engine's kind it refuses (403),
    for each passthrough listener without `allow_admin_endpoints: true`. The `passthrough`
    addon enforces them; `flm-gateway validate --effective` prints them."""
    kinds = {engine.name: engine.kind for engine in config.engines}
    return MappingProxyType(
        {
            listener.name: adapter_for(kinds[listener.passthrough]).admin_routes
            for listener in config.listeners
            if listener.passthrough is not None and not listener.allow_admin_endpoints
        }
    )
