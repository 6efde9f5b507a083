"""`flm-gateway reload`: make the running gateway re-read flm.yaml, and say how it went.

Validates the file here first (printing every problem, exit 1, nothing sent),
then sends SIGHUP to the gateway named by the pid file in the config's state
directory and waits up to `--wait` seconds for its `last-reload.json` to report
the outcome. When the file's `server.state_dir` was edited, the gateway that
serves the file is found by the lock it holds in its old state directory, and
the command says that this change needs a restart (exit 1) instead of "no
running gateway". Exit 0: reloaded. 1: invalid file, a change that needs a
restart, or the gateway kept its old config. 2: no running gateway found, or no
answer in time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from flm_gateway.cli.common import add_config_argument, config_path
from flm_gateway.config import ConfigError, load_config
from flm_gateway.config.loader import position_of
from flm_gateway.state.process import gateway_serving, read_reload_status, running_pid


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reload", help="validate flm.yaml and make the running gateway reload it"
    )
    add_config_argument(parser)
    parser.add_argument(
        "--wait",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how long to wait for the gateway's answer (default 15)",
    )
    parser.set_defaults(func=run_reload)


def run_reload(args: argparse.Namespace) -> int:
    path = config_path(args)
    if path is None:
        print("no flm.yaml found: the built-in default cannot be reloaded", file=sys.stderr)
        return 2
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"{len(exc.problems)} problem(s); the running gateway was not asked to reload",
            file=sys.stderr,
        )
        return 1
    pid = running_pid(loaded.state_dir)
    if pid is None and loaded.path is not None:
        elsewhere = gateway_serving(loaded.path)
        if elsewhere is not None and elsewhere[1] != loaded.state_dir:
            other_pid, old_state_dir = elsewhere
            print(
                f"{position_of(loaded, ('server', 'state_dir'))}: server.state_dir: gateway "
                f"{other_pid} serves {loaded.display_name} from the state directory "
                f"{old_state_dir}; the file now says {loaded.state_dir}. The state directory "
                "cannot change while serving: restart the gateway to use the new one (or set "
                "server.state_dir back and reload); the gateway was not asked to reload",
                file=sys.stderr,
            )
            return 1
    if pid is None:
        print(
            f"no running gateway found for {loaded.display_name} (no live pid file in "
            f"{loaded.state_dir}); start it with: flm-gateway run --config {loaded.path}",
            file=sys.stderr,
        )
        return 2
    before = read_reload_status(loaded.state_dir)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        status = read_reload_status(loaded.state_dir)
        if status is not None and status != before and status.get("pid") == pid:
            if status.get("ok"):
                print(f"reloaded: gateway {pid} serves config generation {status['generation']}")
                return 0
            print(f"gateway {pid} kept its old config; problems:", file=sys.stderr)
            for problem in status.get("problems") or []:
                print(f"  {problem}", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"sent SIGHUP to gateway {pid}; no answer within {args.wait:g}s", file=sys.stderr)
    return 2
