"""Golden tests: each `tests/golden/*.flmtest` pairs an flm.yaml with its effective policy.

A failure shows the diff between the committed policy and the one the code computes now;
if the change is intended, `python -m tests.golden.regenerate` rewrites the files and the
review reads `git diff tests/golden`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pytest
import yaml

from flm_gateway.config.default import DEFAULT_CONFIG_YAML
from tests.golden.cases import (
    CASES,
    SEPARATOR,
    case_files,
    effective_json,
    render_case,
    split_case,
)

REGENERATE = "python -m tests.golden.regenerate"


def policy_diff(expected: str, actual: str, name: str) -> str:
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            f"{name} (committed)",
            f"{name} (computed now)",
        )
    )


@pytest.mark.parametrize("path", case_files(), ids=lambda path: path.stem)
def test_effective_policy_matches_the_golden_file(path: Path) -> None:
    committed = path.read_text(encoding="utf-8")
    assert split_case(committed)[1], f"{path.name} has no `{SEPARATOR}` line: run {REGENERATE}"
    computed = render_case(path)
    if computed != committed:
        pytest.fail(
            f"the effective policy of {path.name} changed; if intended, run {REGENERATE} "
            f"and review the diff:\n{policy_diff(committed, computed, path.name)}",
            pytrace=False,
        )


def test_there_are_cases() -> None:
    assert len(case_files()) >= 8


def test_the_default_case_is_the_built_in_default() -> None:
    yaml_text, _ = split_case((CASES / "builtin_default.flmtest").read_text(encoding="utf-8"))
    assert yaml_text == DEFAULT_CONFIG_YAML


SECRET_FIELDS = frozenset({"hash", "api_key", "password", "url", "redis_url"})


def secret_values(node: Any) -> set[str]:
    """Every value of a secret-bearing field (`SECRET_FIELDS`) anywhere in the YAML data."""
    found: set[str] = set()
    if isinstance(node, dict):
        for name, value in node.items():
            if name in SECRET_FIELDS:
                found |= {str(v) for v in (value if isinstance(value, list) else [value])}
            found |= secret_values(value)
    elif isinstance(node, list):
        for item in node:
            found |= secret_values(item)
    return found


@pytest.mark.parametrize("path", case_files(), ids=lambda path: path.stem)
def test_no_secret_reaches_the_policy(path: Path) -> None:
    """Key hashes, the engines' api keys and URLs, egress passwords and the Redis URL
    never appear in a policy, whatever the case declares."""
    yaml_text, _ = split_case(path.read_text(encoding="utf-8"))
    secrets = secret_values(yaml.safe_load(yaml_text))
    actual = effective_json(yaml_text, path.name)
    assert secrets, "every case declares at least an engine url"
    assert [secret for secret in secrets if secret in actual] == []
    assert "sha256:" not in actual


def test_the_secrets_case_declares_every_kind_of_secret() -> None:
    yaml_text, _ = split_case((CASES / "secrets_left_out.flmtest").read_text(encoding="utf-8"))
    secrets = secret_values(yaml.safe_load(yaml_text))
    for expected in ("engine-secret-key", "socks-secret", "redis://:redis-secret@127.0.0.1:6379/0"):
        assert expected in secrets


def test_a_changed_policy_fails_with_the_diff(tmp_path: Path) -> None:
    committed = (CASES / "token_caps.flmtest").read_text(encoding="utf-8")
    stale = tmp_path / "stale.flmtest"
    stale.write_text(committed.replace('"unrouted": 512', '"unrouted": 9999', 1))
    with pytest.raises(pytest.fail.Exception) as failure:
        test_effective_policy_matches_the_golden_file(stale)
    message = str(failure.value)
    assert REGENERATE in message
    assert '-            "unrouted": 9999' in message
    assert '+            "unrouted": 512' in message
