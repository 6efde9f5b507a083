"""`flm-gateway run`: serve flm.yaml (or the built-in default) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
from typing import Any

from flm_gateway.app.process_logs import LOG_FORMATS
from flm_gateway.cli.common import add_config_argument, resolve_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="serve the gateway (the default command)")
    add_config_argument(parser)
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: human-readable lines (default); json: one JSON object per line",
    )
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    loaded = resolve_config(args)
    if loaded is None:
        return 1
    from flm_gateway.app.gateway import serve_forever

    return serve_forever(loaded, args.log_format)
