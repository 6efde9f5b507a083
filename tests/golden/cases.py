"""Golden cases: an flm.yaml and the effective policy it produces, in one `.flmtest` file.

As in Caddy's adapter tests (`caddytest/integration/caddyfile_adapt/*.caddyfiletest`), a
case file holds the input, a line of ten dashes, then the expected JSON
(`flm-gateway validate --effective` prints the same JSON). `render_case` computes what a
case file should hold; the test compares, `python -m tests.golden.regenerate` writes it.
"""

from __future__ import annotations

from pathlib import Path

from flm_gateway.config.loader import read_config
from flm_gateway.observability.effective_policy import render_effective_policy

CASES = Path(__file__).parent
SEPARATOR = "----------"
SUFFIX = ".flmtest"


def case_files() -> list[Path]:
    return sorted(CASES.glob(f"*{SUFFIX}"))


def split_case(text: str) -> tuple[str, str]:
    """(flm.yaml, expected JSON) of a case file's text; the JSON is "" when absent."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.rstrip("\n") == SEPARATOR:
            return "".join(lines[:index]), "".join(lines[index + 1 :])
    return text, ""


def effective_json(yaml_text: str, name: str) -> str:
    """The effective policy of `yaml_text` (the environment is empty: cases are self-contained)."""
    parsed = read_config(yaml_text, file=name, base_dir=CASES, environ={})
    return render_effective_policy(parsed.config)


def render_case(path: Path) -> str:
    """What the case file at `path` should hold: its own flm.yaml, then its policy."""
    yaml_text, _ = split_case(path.read_text(encoding="utf-8"))
    if not yaml_text.endswith("\n"):
        yaml_text += "\n"
    return f"{yaml_text}{SEPARATOR}\n{effective_json(yaml_text, path.name)}"
