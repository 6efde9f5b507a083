"""`flm-gateway run`: serve flm.yaml (or the built-in default) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
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
    # Set by the supervisor of `server.workers` for each worker it starts (app.worker_link).
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    loaded = resolve_config(args)
    if loaded is None:
        return 1
    from flm_gateway.app.cpu_quota import worker_count
    from flm_gateway.app.gateway import serve_forever

    if args.worker is not None and args.ready_fd is not None:
        from flm_gateway.app.worker_link import WorkerLink

        link = WorkerLink(args.worker, args.ready_fd, os.getppid())
        return serve_forever(loaded, args.log_format, link)
    count = worker_count(loaded.config.server.workers)
    if count > 1:
        from flm_gateway.app.supervisor import supervise_forever

        return supervise_forever(loaded, count, args.log_format)
    return serve_forever(loaded, args.log_format)
