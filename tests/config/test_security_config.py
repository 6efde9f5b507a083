"""The security: and state: sections: the issue's reference config, defaults, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from flm_gateway.cli.validate_command import schema_json
from flm_gateway.config import ConfigError, load_config, parse_config
from flm_gateway.config.listener_settings import AuthMode
from flm_gateway.config.security_settings import DEFAULT_HONEYPOTS, effective_security
from flm_gateway.security.policies import per_listener

GOLDEN = Path(__file__).parent / "golden"


def test_issue4_reference_config_validates_exactly_as_written() -> None:
    config = load_config(GOLDEN / "issue4_reference.yaml", environ={}).config
    security = config.security
    assert config.listeners[0].auth is AuthMode.API_KEY
    assert security.rate_limits.per_key.requests_per_minute == 10
    assert security.rate_limits.per_ip.requests_per_minute == 600
    assert security.ip.allow == ["127.0.0.0/8", "::1/128"] and security.ip.block == []
    assert security.honeypot_settings.paths == ["/.env", "/wp-admin"]
    assert (security.auto_block.auth_failures, security.auto_block.window) == (5, 60.0)
    assert security.auto_block.duration == 600.0
    schema = json.loads(schema_json())
    document = yaml.safe_load((GOLDEN / "issue4_reference.yaml").read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document)) == []


def test_defaults_are_safe() -> None:
    config, _ = parse_config("listeners: [{name: m, bind: '127.0.0.1:1'}]\n", environ={})
    security = config.security
    assert security.honeypot_settings.paths == list(DEFAULT_HONEYPOTS)
    assert security.intrusion.enabled and security.auto_block.enabled
    assert security.cors.allow_origins == [] and security.ip.allow == []
    assert config.state.backend == "sqlite"


def test_listener_sections_replace_global_ones_whole() -> None:
    text = """\
listeners:
  - {name: a, bind: "127.0.0.1:1"}
  - name: b
    bind: "127.0.0.1:2"
    security:
      ip: {allow: ["10.0.0.0/8"]}
      honeypots: {paths: ["/secret-admin"]}
security:
  ip: {allow: ["127.0.0.0/8"], block: ["192.0.2.0/24"]}
  rate_limits: {per_ip: {requests_per_minute: 5}}
"""
    config, _ = parse_config(text, environ={})
    policies = per_listener(config)
    assert policies["a"].ip.block == ["192.0.2.0/24"]
    assert policies["b"].ip.allow == ["10.0.0.0/8"] and policies["b"].ip.block == []
    assert policies["b"].honeypot_settings.paths == ["/secret-admin"]
    assert policies["b"].rate_limits.per_ip.requests_per_minute == 5
    assert effective_security(config.security, None) is config.security


def test_declared_keys_must_be_checked_somewhere() -> None:
    """flm.yaml decides where keys are required: a key that no listener checks is an error."""
    key = "{id: ci, hash: 'sha256:" + "1" * 64 + "'"
    text = (
        "listeners:\n"
        "  - {name: keyed, bind: '127.0.0.1:1', auth: api-key}\n"
        "  - {name: local, bind: '127.0.0.1:2'}\n"
        f"security:\n  keys:\n    - {key}, scopes: {{listeners: [local, keyed]}}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    [problem] = caught.value.problems
    assert str(problem).startswith("flm.yaml:6:")
    assert problem.path == "security.keys[0].scopes.listeners[0]"
    assert problem.message.startswith("listener 'local' has no auth:, so it never checks keys")
    unkeyed = text.replace(", auth: api-key", "").replace("local, keyed", "keyed")
    with pytest.raises(ConfigError) as caught:
        parse_config(unkeyed.replace(", scopes: {listeners: [keyed]}", ""), environ={})
    [problem] = caught.value.problems
    assert problem.path == "security.keys"
    assert "keys are declared but no listener requires one" in problem.message
