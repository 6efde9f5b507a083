"""flm.yaml: its models, its loader and the built-in default."""

from flm_gateway.config.loader import LoadedConfig, load_config, parse_config
from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.problems import ConfigError, ConfigProblem

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "GatewayConfig",
    "LoadedConfig",
    "load_config",
    "parse_config",
]
