"""What every subcommand shares: the --config option and loading the config for a command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flm_gateway.config import ConfigError, LoadedConfig, load_config
from flm_gateway.config.default import default_config
from flm_gateway.config.engine_settings import EngineConfig

if TYPE_CHECKING:  # imported by the commands that use it, not by every command
    from flm_gateway.httpio.http_client import HttpSession

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


def config_path(args: argparse.Namespace) -> Path | None:
    """The flm.yaml a command reads: --config, else ./flm.yaml when there is one, else None
    (the built-in default)."""
    path: Path | None = args.config
    if path is None and DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH
    return path


def resolve_config(args: argparse.Namespace) -> LoadedConfig | None:
    """The config named by --config, ./flm.yaml, or the built-in default.

    Prints every problem to stderr and returns None when the file is invalid.
    """
    path = config_path(args)
    try:
        return load_config(path) if path is not None else default_config()
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found; nothing was started.", file=sys.stderr)
        return None


def engine_sessions(loaded: LoadedConfig) -> Callable[[EngineConfig], HttpSession]:
    """HTTP sessions for commands that talk to engines (`engines detect`, `models list`).

    A declared engine egresses through its profile exactly as the running gateway's health
    checks do (HTTP calls dial through the profile's dialer; no CONNECT bridge is needed).
    Any other target (detection's default ports) uses the default profile, except on a
    loopback host, which is dialled directly: a proxy could not reach this machine's
    loopback, and dialling it leaks nothing.
    """
    from flm_gateway.config.egress_settings import engine_connect_timeout
    from flm_gateway.config.types import is_loopback_host
    from flm_gateway.egress.dialer import DirectDialer
    from flm_gateway.egress.profiles import build_plan
    from flm_gateway.egress.sessions import make_session

    config = loaded.config
    plan = build_plan(config.egress, list(config.engines))

    def factory(engine: EngineConfig) -> HttpSession:
        if any(engine is declared for declared in config.engines):
            dialer = plan.profile_for(engine.name).dialer
            timeout = engine_connect_timeout(config.egress, engine)
        elif is_loopback_host(urlsplit(engine.url).hostname or ""):
            dialer, timeout = DirectDialer(), engine.timeouts.connect
        else:
            profile = plan.profile_for(None)
            dialer = profile.dialer
            timeout = profile.connect_timeout or engine.timeouts.connect
        return make_session(lambda: (dialer, timeout))

    return factory
