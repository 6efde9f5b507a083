"""`flm-gateway check`: config, engines, listeners, certificates and state, one line each.

Exit 0 when nothing failed (warnings allowed), 1 otherwise. Each failing line
ends with `-> what to do`. `--json` prints the results as a list of objects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flm_gateway.app.preflight import CheckResult, Level, run_checks
from flm_gateway.cli.common import add_config_argument, config_path
from flm_gateway.config import ConfigError, LoadedConfig, load_config
from flm_gateway.config.default import default_config
from flm_gateway.core.text import printable


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check", help="check config, engines, listeners, certificates and state"
    )
    add_config_argument(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="longest wait for all engine checks (default 10)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(func=run_check)


def _load(path: Path | None) -> LoadedConfig | list[CheckResult]:
    if path is None:
        return default_config()
    try:
        return load_config(path)
    except ConfigError as exc:
        return [
            CheckResult(
                "config",
                str(path),
                Level.FAIL,
                str(problem),
                "fix this line (flm-gateway validate checks the file)",
            )
            for problem in exc.problems
        ]


async def _run(loaded: LoadedConfig, timeout: float) -> list[CheckResult]:
    from flm_gateway.app.gateway import engine_directory
    from flm_gateway.egress.egress_service import EgressService

    egress = EgressService()
    egress.commit(egress.prepare(loaded))
    try:
        return await run_checks(loaded, lambda cfg: engine_directory(cfg, egress), timeout)
    finally:
        await egress.stop()


def run_check(args: argparse.Namespace) -> int:
    loaded = _load(config_path(args))
    results = loaded if isinstance(loaded, list) else asyncio.run(_run(loaded, args.timeout))
    failed = [r for r in results if r.level is Level.FAIL]
    if args.json:
        json.dump([asdict(r) for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for result in results:
            print(printable(result.line()))  # messages may quote what an engine answered
        warned = sum(1 for r in results if r.level is Level.WARN)
        summary = f"{len(failed)} problem(s), {warned} warning(s)"
        print(summary if failed or warned else "everything is in order")
    return 1 if failed else 0
