"""`flm-gateway backup create FILE` and `backup restore FILE`.

create: the config (from --config or ./flm.yaml) and the state directory into
FILE, sealed with the passphrase from the environment variable named by
`--passphrase-env` (recommended: the backup holds the CA key and key hashes).
restore: validates the whole backup, then swaps the state directory and the
config in (see `flm_gateway.backup.restore`); the gateway must be stopped.
Both are recorded in the audit log (`backup.create`, `backup.restore`, the
latter in the restored store), best effort: a store that cannot be opened is
reported, not fatal. Exit 0 on success, 1 when the backup or its target is
refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from flm_gateway.cli.admin_command import actor, audit
from flm_gateway.cli.common import DEFAULT_CONFIG_PATH, add_config_argument, resolve_config
from flm_gateway.config import ConfigError, LoadedConfig, load_config
from flm_gateway.core.severity import Severity
from flm_gateway.state import StateError, open_store
from flm_gateway.state.process import write_atomic


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("backup", help="back up or restore config and state")
    actions = parser.add_subparsers(dest="backup_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="write a backup file")
    create.add_argument("file", type=Path, help="backup file to write")
    add_config_argument(create)
    create.add_argument(
        "--passphrase-env", metavar="VAR", help="encrypt with the passphrase in this variable"
    )
    create.add_argument(
        "--include-request-log",
        action="store_true",
        help="keep the request log rows (left out by default)",
    )
    create.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    create.set_defaults(func=run_create)
    restore = actions.add_parser("restore", help="restore a backup file (gateway stopped)")
    restore.add_argument("file", type=Path, help="backup file to read")
    restore.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="PATH",
        help="where the config is restored (default ./flm.yaml); the state directory follows it",
    )
    restore.add_argument(
        "--passphrase-env", metavar="VAR", help="the variable holding the backup's passphrase"
    )
    restore.set_defaults(func=run_restore)


def _passphrase(variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise SystemExit(f"flm-gateway backup: environment variable {variable} is not set")
    return value


def _audit(loaded: LoadedConfig, type_: str, details: dict[str, str]) -> None:
    try:
        store = open_store(loaded, actor())
        try:
            audit(store, type_, Severity.INFO, **details)
        finally:
            store.close()
    except StateError as exc:
        print(f"warning: not recorded in the audit log: {exc}", file=sys.stderr)


def run_create(args: argparse.Namespace) -> int:
    loaded = resolve_config(args)
    if loaded is None:
        return 1
    if args.file.exists() and not args.force:
        print(f"{args.file} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    from flm_gateway.backup.create import create_backup  # tarfile, scrypt: backups only

    passphrase = _passphrase(args.passphrase_env)
    data = create_backup(loaded, passphrase, args.include_request_log)
    write_atomic(args.file, data, 0o600)
    sealed = "encrypted" if passphrase else "NOT encrypted"
    _audit(loaded, "backup.create", {"file": str(args.file.resolve()), "encryption": sealed})
    print(
        f"wrote {args.file} ({len(data)} bytes, {sealed}) from {loaded.display_name} "
        f"and {loaded.state_dir}"
    )
    if not passphrase:
        print(
            "warning: the backup holds private keys in the clear; use --passphrase-env VAR "
            "or keep the file safe",
            file=sys.stderr,
        )
    return 0


def run_restore(args: argparse.Namespace) -> int:
    from flm_gateway.backup.restore import RestoreError, apply_restore, open_backup, plan_restore

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        contents = open_backup(data, _passphrase(args.passphrase_env))
        plan = plan_restore(contents, args.config)
    except RestoreError as exc:
        for problem in exc.problems:
            print(f"refused: {problem}", file=sys.stderr)
        print("nothing was changed", file=sys.stderr)
        return 1
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        result = apply_restore(plan)
    except OSError as exc:
        print(f"restore failed and was undone: {exc}", file=sys.stderr)
        return 1
    try:
        restored = load_config(result.config_path)
    except ConfigError:
        print(
            "warning: not recorded in the audit log: the restored config needs its "
            "environment variables",
            file=sys.stderr,
        )
    else:
        _audit(
            restored,
            "backup.restore",
            {"file": str(args.file.resolve()), "previous_state": str(result.previous_state or "-")},
        )
    print(f"restored {result.files} state file(s) into {result.state_dir}")
    print(f"restored the config to {result.config_path}")
    if result.previous_state is not None:
        print(f"the previous state directory is kept at {result.previous_state}")
    if result.previous_config is not None:
        print(f"the previous config is kept at {result.previous_config}")
    return 0
