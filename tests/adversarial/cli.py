"""The real `flm-gateway` command line, run as its own process against a test's config.

`run_cli(config, "keys", "create", ...)` runs `python -m flm_gateway ... --config
config` with this worktree on `PYTHONPATH` and returns a `CliResult` (exit code,
stdout, stderr, as bytes and text), so a test sees exactly what an operator's
terminal would receive, control characters included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.gateway_process import ROOT


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape")

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(config: Path, *args: str, timeout: float = 60.0) -> CliResult:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "HOME": str(config.parent),
    }
    done = subprocess.run(
        [sys.executable, "-m", "flm_gateway", *args, "--config", str(config)],
        capture_output=True,
        env=environment,
        cwd=config.parent,
        timeout=timeout,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)
