"""`flm-gateway` command line: one parser, one module per subcommand group.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its
parser and sets `func(args) -> int`. `run` is the default when no subcommand is
given. No command prints a traceback for a user error: they print the problem
and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from flm_gateway import __version__
from flm_gateway.proxy import mitm_lean

COMMAND_MODULES = (
    "flm_gateway.cli.serve_command",
    "flm_gateway.cli.validate_command",
    "flm_gateway.cli.ca_command",
    "flm_gateway.cli.reload_command",
    "flm_gateway.cli.check_command",
    "flm_gateway.cli.logs_command",
    "flm_gateway.cli.backup_command",
    "flm_gateway.cli.chat_command",
    "flm_gateway.cli.engines_command",
    "flm_gateway.cli.models_command",
    "flm_gateway.cli.keys_command",
    "flm_gateway.cli.security_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flm-gateway",
        description="A secure, OpenAI-compatible gateway in front of self-hosted LLM engines.",
    )
    parser.add_argument("--version", action="version", version=f"flm-gateway {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    mitm_lean.install()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (
        args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version")
    ):
        args_list = ["run", *args_list]
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
