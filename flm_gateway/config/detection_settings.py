"""The `detection:` section: how `flm-gateway engines detect` looks for local engines."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.config.types import Duration, StrictModel

Port = Annotated[int, Field(ge=1, le=65535)]


class DetectionSettings(StrictModel):
    """Where `engines detect` probes for engines that flm.yaml does not declare."""

    host: str = Field("127.0.0.1", description="Host whose default engine ports are probed.")
    ports: dict[EngineKind, Port | None] = Field(
        default_factory=dict,
        description=(
            "Ports to probe instead of the defaults (ollama 11434, vllm 8000, lmstudio 1234, "
            "llamacpp 8080; openai has none); null skips that kind, e.g. {vllm: 8001, "
            "lmstudio: null}."
        ),
    )
    timeout: Duration = Field(
        1.0, description="Time each probe request may take before the port counts as silent."
    )
    cache_ttl: Duration = Field(
        300.0,
        description=(
            "How long results stay cached in the state directory; `--refresh` probes again."
        ),
    )
