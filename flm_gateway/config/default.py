"""The built-in config used when there is no flm.yaml: one loopback listener and
every engine kind on its default local port, models routed by discovery."""

from __future__ import annotations

from pathlib import Path

from flm_gateway.config.loader import LoadedConfig, parse_config

DEFAULT_CONFIG_YAML = """\
version: 1
listeners:
  - name: main
    bind: 127.0.0.1:8088
    tls: {mode: local-http}
engines:
  - {name: ollama, kind: ollama, url: "http://127.0.0.1:11434"}
  - {name: lmstudio, kind: lmstudio, url: "http://127.0.0.1:1234"}
  - {name: vllm, kind: vllm, url: "http://127.0.0.1:8000"}
  - {name: llamacpp, kind: llamacpp, url: "http://127.0.0.1:8080"}
"""


def default_config() -> LoadedConfig:
    """The built-in default, validated like any file."""
    config, state_dir = parse_config(
        DEFAULT_CONFIG_YAML, file="<built-in default>", base_dir=Path.cwd(), environ={}
    )
    return LoadedConfig(config=config, path=None, state_dir=state_dir, source=DEFAULT_CONFIG_YAML)
