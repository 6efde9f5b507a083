"""flm.yaml: its models, its loader and the built-in default."""

from flm_gateway.config.loader import (
    ConfigError,
    ConfigProblem,
    LoadedConfig,
    load_config,
    parse_config,
)
from flm_gateway.config.model import GatewayConfig

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "GatewayConfig",
    "LoadedConfig",
    "load_config",
    "parse_config",
]
