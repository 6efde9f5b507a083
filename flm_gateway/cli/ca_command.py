"""`flm-gateway ca install|uninstall|export FILE`: the packaged-ca root and the OS trust store.

`install` creates the root if the gateway has not yet (same files the gateway
uses: `state_dir/tls/packaged-ca/`), then adds it to the system trust store;
`uninstall` removes exactly that root; `export FILE` writes the root certificate
(PEM, never the key) for other devices, `-` for stdout. `--dry-run` prints the
steps without doing them; `--system` overrides the detected system. Errors are
one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flm_gateway.cli.common import add_config_argument, resolve_config
from flm_gateway.config.loader import LoadedConfig
from flm_gateway.config.tls_settings import TlsMode
from flm_gateway.tls.packaged_ca import LocalRoot, root_cert_path
from flm_gateway.tls.pki import certs_to_pem, fingerprint, write_file_atomic
from flm_gateway.tls.trust_store import (
    SYSTEMS,
    TrustStoreError,
    detect_system,
    execute,
    install_plan,
    uninstall_plan,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ca", help="install, uninstall or export the local root CA of packaged-ca listeners"
    )
    actions = parser.add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    for name, help_text in (
        ("install", "add the root CA to the operating system's trust store"),
        ("uninstall", "remove the root CA from the operating system's trust store"),
    ):
        action = actions.add_parser(name, help=help_text)
        add_config_argument(action)
        action.add_argument("--system", choices=SYSTEMS, help="override the detected system")
        action.add_argument("--dry-run", action="store_true", help="print the steps only")
        action.set_defaults(func=run_install if name == "install" else run_uninstall)
    export = actions.add_parser("export", help="write the root CA certificate (PEM) to FILE")
    export.add_argument("file", help="destination file, or - for stdout")
    add_config_argument(export)
    export.set_defaults(func=run_export)


def _fail(message: str) -> int:
    print(f"flm-gateway ca: {message}", file=sys.stderr)
    return 1


def _load(args: argparse.Namespace) -> LoadedConfig | None:
    loaded = resolve_config(args)
    if loaded is None:
        return None
    if not any(item.tls.mode == TlsMode.PACKAGED_CA for item in loaded.config.listeners):
        _fail(f"{loaded.display_name}: no listener uses tls mode packaged-ca")
        return None
    return loaded


def _root(loaded: LoadedConfig) -> LocalRoot:
    return LocalRoot.load_or_create(loaded.state_dir)


def run_install(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 1
    try:
        root = _root(loaded)
        system = args.system or detect_system()
        plan = install_plan(system, root.cert, root_cert_path(loaded.state_dir))
        return _carry_out(args, plan, root, "installed")
    except (TrustStoreError, OSError, ValueError) as exc:
        return _fail(str(exc))


def run_uninstall(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 1
    path = root_cert_path(loaded.state_dir)
    if not path.exists():
        return _fail(f"there is no root CA in {path.parent}; nothing to uninstall")
    try:
        root = _root(loaded)
        system = args.system or detect_system()
        return _carry_out(args, uninstall_plan(system, root.cert, path), root, "removed")
    except (TrustStoreError, OSError, ValueError) as exc:
        return _fail(str(exc))


def _carry_out(args: argparse.Namespace, plan: Any, root: LocalRoot, verb: str) -> int:
    subject = root.cert.subject.rfc4514_string()
    if args.dry_run:
        print(f"# {plan.system} trust store, root {subject}")
        for step in plan.steps:
            print(step.describe())
        return 0
    execute(plan, root.cert)
    print(
        f"{verb} root {subject} (SHA-256 {fingerprint(root.cert)}) "
        f"{'into' if verb == 'installed' else 'from'} the {plan.system} trust store"
    )
    return 0


def run_export(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 1
    try:
        pem = certs_to_pem([_root(loaded).cert])
        if args.file == "-":
            sys.stdout.write(pem.decode())
        else:
            write_file_atomic(Path(args.file), pem, mode=0o644)
            print(f"wrote the root CA certificate to {args.file}")
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    return 0
