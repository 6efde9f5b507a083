"""`scripts/find-python.sh --floor`: the oldest supported Python, which `scripts/test.sh`
runs the suite on a second time, is exactly pyproject's `requires-python`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "scripts" / "find-python.sh"


def _floor_of_script() -> tuple[int, int]:
    match = re.search(r"^FLOOR=(\d+)\.(\d+)$", SCRIPT.read_text(), re.MULTILINE)
    assert match is not None, "find-python.sh sets no FLOOR"
    return int(match[1]), int(match[2])


def _version(python: str) -> tuple[int, int]:
    out = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_floor_is_requires_python() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">={}.{}".format(*_floor_of_script())


def test_floor_mode_finds_only_the_floor_version() -> None:
    """A newer interpreter named by FLM_FLOOR_PYTHON is passed over; what is printed (if
    anything) runs the floor version, and a failure says how to provide one."""
    newer = sys.executable if sys.version_info[:2] != _floor_of_script() else None
    env = {**os.environ, **({"FLM_FLOOR_PYTHON": newer} if newer else {})}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--floor"], capture_output=True, text=True, env=env, timeout=60
    )
    if result.returncode == 0:
        found = result.stdout.strip()
        assert found != newer
        assert _version(found) == _floor_of_script()
    else:
        assert "FLM_FLOOR_PYTHON" in result.stderr


def test_default_mode_still_prefers_a_supported_python() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, check=True, timeout=60
    )
    assert _version(result.stdout.strip()) >= _floor_of_script()
