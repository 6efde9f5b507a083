"""`flm-gateway keys create|list|revoke|rotate|hash`: API keys in the state store.

`create` prints the secret once (with `--json`: an object whose `key` is the
secret and `id` its public identifier); only its SHA-256 is stored. `list`
never shows secrets or hashes. `rotate` issues a new secret for the same id;
the old one keeps working for `--overlap` (default 24h), then stops. `revoke`
stops every secret of a key at once. Keys declared in flm.yaml are listed but
are changed in the file. `hash` prints the hash of a secret read from stdin,
for declaring keys in flm.yaml (`create --no-store` prints both). Every change
is written to the audit log. A running gateway accepts a new (or rotated) key
at once: it looks an unknown key up in the store before refusing it. A
revocation reaches running gateways within `state.refresh_interval` (1 s by
default), which `revoke` says. A name is printable text (no control characters).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from flm_gateway.cli.admin_command import (
    CommandError,
    audit,
    duration_arg,
    iso,
    parse_when,
    print_json,
    print_table,
    store_command,
)
from flm_gateway.config import LoadedConfig
from flm_gateway.config.listener_settings import auth_summary, requires_api_key
from flm_gateway.core.text import printable
from flm_gateway.security.keys import (
    all_keys,
    generate_key_id,
    generate_secret,
    hash_secret,
)
from flm_gateway.state.store import KeyLimits, KeyRecord, KeyScopes, KeySecret, StateStore

MAX_NAME = 100

SCOPE_KINDS = {"model": "models", "route": "routes", "listener": "listeners"}


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create, list, revoke and rotate API keys")
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = store_command(sub, "create", "create a key and print its secret once", run_create)
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--scopes",
        action="append",
        default=[],
        metavar="KIND:VALUE[,...]",
        help="limit the key: model:GLOB, route:MODEL, listener:NAME (repeatable; a bare "
        "value is a model)",
    )
    create.add_argument("--expires", help="when it stops working: a duration (90d) or a date")
    create.add_argument("--rpm", type=int, help="its own requests-per-minute limit")
    create.add_argument("--tpm", type=int, help="its own tokens-per-minute limit")
    create.add_argument("--max-tokens", type=int, help="the largest max_tokens it may ask for")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.add_argument(
        "--no-store",
        action="store_true",
        help="do not store it; print the secret and the flm.yaml entry that declares it",
    )

    listing = store_command(sub, "list", "list keys (never their secrets)", run_list)
    listing.add_argument("--json", action="store_true")

    revoke = store_command(sub, "revoke", "stop a key now", run_revoke)
    revoke.add_argument("id")

    rotate = store_command(
        sub, "rotate", "issue a new secret; the old one works for --overlap", run_rotate
    )
    rotate.add_argument("id")
    rotate.add_argument("--overlap", type=duration_arg, default=86400.0, help="default 24h")
    rotate.add_argument("--json", action="store_true")

    hash_ = sub.add_parser("hash", help="print sha256:<hex> of a secret read from stdin")
    hash_.set_defaults(func=run_hash)


def parse_scopes(items: list[str], loaded: LoadedConfig) -> KeyScopes:
    found: dict[str, list[str]] = {"models": [], "routes": [], "listeners": []}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            kind, sep, value = part.partition(":")
            if not sep:
                kind, value = "model", part
            if kind not in SCOPE_KINDS or not value:
                raise CommandError(f"scope {part!r}: use model:GLOB, route:MODEL or listener:NAME")
            found[SCOPE_KINDS[kind]].append(value)
    config = loaded.config
    listeners = [listener.name for listener in config.listeners]
    for name in found["listeners"]:
        if name not in listeners:
            raise CommandError(f"unknown listener {name!r}; listeners: {', '.join(listeners)}")
    routes = [route.model for route in config.routes]
    for model in found["routes"]:
        if model not in routes:
            raise CommandError(
                f"no route has model {model!r}; routes: {', '.join(routes) or 'none'}"
            )
    return KeyScopes(tuple(found["models"]), tuple(found["routes"]), tuple(found["listeners"]))


def _describe(key: KeyRecord, now: float) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "source": key.source,
        "status": key.status(now),
        "created_at": iso(key.created_at) if key.source == "store" else None,
        "expires_at": iso(key.expires_at) if key.expires_at else None,
        "revoked_at": iso(key.revoked_at) if key.revoked_at else None,
        "scopes": key.scopes.to_json(),
        "limits": key.limits.to_json(),
        "secrets_active": sum(1 for s in key.secrets if s.valid_at(now)),
        "rotation_ends_at": iso(
            max(
                (s.expires_at for s in key.secrets if s.expires_at and s.valid_at(now)),
                default=None,
            )
        )
        if any(s.expires_at and s.valid_at(now) for s in key.secrets)
        else None,
    }


def run_create(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    now = time.time()
    if not args.name or len(args.name) > MAX_NAME or printable(args.name) != args.name:
        raise CommandError(
            f"--name must be 1 to {MAX_NAME} printable characters (no control characters)"
        )
    scopes = parse_scopes(args.scopes, loaded)
    expires_at = parse_when(args.expires, future=True) if args.expires else None
    if expires_at is not None and expires_at <= now:
        raise CommandError("--expires is in the past")
    for flag in ("rpm", "tpm", "max_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CommandError(f"--{flag.replace('_', '-')} must be at least 1")
    secret = generate_secret()
    key = KeyRecord(
        id=generate_key_id(),
        name=args.name,
        created_at=now,
        secrets=(KeySecret(hash_secret(secret), now),),
        scopes=scopes,
        limits=KeyLimits(args.rpm, args.tpm, args.max_tokens),
        expires_at=expires_at,
    )
    if args.no_store:
        return _print_declaration(args, key, secret)
    declared = {k.id for k in loaded.config.security.keys}
    if key.id in declared:  # 48 random bits: practically never, but never shadow flm.yaml
        raise CommandError("generated id collides with a key in flm.yaml; run again")
    store.create_key(key)
    audit(store, "key.created", key_id=key.id, name=key.name, scopes=scopes.to_json())
    if args.json:
        print_json({**_describe(key, now), "key": secret})
    else:
        print(f"created key {key.id} ({printable(key.name)})")
        print(f"secret (shown once, store it now): {secret}")
    _say_where_keys_count(loaded, key, sys.stderr if args.json else sys.stdout)
    return 0


def _say_where_keys_count(loaded: LoadedConfig, key: KeyRecord, out: TextIO) -> None:
    """flm.yaml decides which listeners require keys; a new key changes none of them."""
    listeners = loaded.config.listeners
    for line in auth_summary(listeners):
        print(line, file=out)
    for listener in listeners:
        if listener.name in key.scopes.listeners and not requires_api_key(listener):
            print(
                f"note: listener {listener.name!r} requires no key (no auth: api-key in "
                f"{loaded.display_name}), so this key changes nothing there",
                file=out,
            )
    if not any(map(requires_api_key, listeners)):
        print(
            f"note: no listener requires a key yet; set auth: api-key on a listener in "
            f"{loaded.display_name} to require one",
            file=out,
        )


def _print_declaration(args: argparse.Namespace, key: KeyRecord, secret: str) -> int:
    entry: dict[str, Any] = {"id": key.id, "name": key.name, "hash": key.secrets[0].hash}
    scopes = {k: list(v) for k, v in key.scopes.to_json().items() if v}
    if scopes:
        entry["scopes"] = scopes
    limits = {k: v for k, v in key.limits.to_json().items() if v is not None}
    if limits:
        entry["limits"] = limits
    if key.expires_at is not None:
        entry["expires"] = iso(key.expires_at)
    if args.json:
        print_json({"id": key.id, "key": secret, "declaration": entry})
        return 0
    import yaml

    print(f"secret (shown once, store it now): {secret}")
    print("add under security.keys in flm.yaml:")
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())
    return 0


def run_list(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    now = time.time()
    keys = all_keys(loaded.config.security.keys, store.list_keys())
    usage = store.get_counters("usage:")
    rows = []
    for key in keys:
        info = _describe(key, now)
        info["requests"] = usage.get(f"usage:{key.id}:requests", 0)
        info["tokens"] = usage.get(f"usage:{key.id}:tokens", 0)
        rows.append(info)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no keys (create one with: flm-gateway keys create --name NAME)")
        return 0
    print_table(
        ["ID", "NAME", "SOURCE", "STATUS", "EXPIRES", "SCOPES", "REQUESTS", "TOKENS"],
        [
            [
                r["id"],
                r["name"],
                r["source"],
                r["status"] + (" (rotating)" if r["rotation_ends_at"] else ""),
                r["expires_at"] or "-",
                " ".join(f"{k[:-1]}:{v}" for k, vs in r["scopes"].items() for v in vs) or "*",
                str(r["requests"]),
                str(r["tokens"]),
            ]
            for r in rows
        ],
    )
    return 0


def _stored_key(loaded: LoadedConfig, store: StateStore, key_id: str) -> KeyRecord:
    if key_id in {key.id for key in loaded.config.security.keys}:
        raise CommandError(f"{key_id!r} is declared in {loaded.display_name}; change it there")
    key = store.get_key(key_id)
    if key is None:
        raise CommandError(f"no key {key_id!r} (see: flm-gateway keys list)")
    return key


def run_revoke(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    key = _stored_key(loaded, store, args.id)
    if key.revoked_at is not None:
        print(f"{key.id} was already revoked at {iso(key.revoked_at)}")
        return 0
    store.revoke_key(key.id, time.time())
    audit(store, "key.revoked", key_id=key.id, name=key.name)
    print(
        f"revoked {key.id} ({printable(key.name)}); running gateways refuse it within "
        f"{loaded.config.state.refresh_interval:g}s (state.refresh_interval)"
    )
    return 0


def run_rotate(args: argparse.Namespace, loaded: LoadedConfig, store: StateStore) -> int:
    key = _stored_key(loaded, store, args.id)
    now = time.time()
    if key.status(now) != "active":
        raise CommandError(f"{key.id} is {key.status(now)}; create a new key instead")
    secret = generate_secret()
    store.add_key_secret(key.id, KeySecret(hash_secret(secret), now), now + args.overlap)
    audit(store, "key.rotated", key_id=key.id, name=key.name, overlap_seconds=args.overlap)
    if args.json:
        print_json({"id": key.id, "key": secret, "old_secrets_end_at": iso(now + args.overlap)})
    else:
        print(
            f"rotated {key.id} ({printable(key.name)}); "
            f"the old secret works until {iso(now + args.overlap)}"
        )
        print(f"new secret (shown once, store it now): {secret}")
    return 0


def run_hash(args: argparse.Namespace) -> int:
    secret = sys.stdin.readline().strip()
    if not secret:
        print("error: give the secret on stdin", file=sys.stderr)
        return 1
    print(hash_secret(secret))
    return 0
