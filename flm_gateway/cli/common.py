"""What every subcommand shares: the --config option and loading the config for a command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flm_gateway.config import ConfigError, LoadedConfig, load_config
from flm_gateway.config.default import default_config

DEFAULT_CONFIG_PATH = Path("flm.yaml")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        metavar="PATH",
        help="flm.yaml to use (default: ./flm.yaml, else the built-in default)",
    )


def resolve_config(args: argparse.Namespace) -> LoadedConfig | None:
    """The config named by --config, ./flm.yaml, or the built-in default.

    Prints every problem to stderr and returns None when the file is invalid.
    """
    path: Path | None = args.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    try:
        return load_config(path) if path is not None else default_config()
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found; nothing was started.", file=sys.stderr)
        return None
