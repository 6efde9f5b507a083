"""`flm-gateway models list`: every model of every engine, with the names clients use.

Checks each engine once, as the running gateway does (`EngineDirectory.check_all`),
and prints one row per model: engine, context length and loaded state where the
engine reports them, and its public names (the model id when routing by
discovery reaches it, plus the route names that send requests to it). Engines
that cannot be checked are listed on stderr (in `engines` with `--json`).
Exit code 0; 1 for an invalid config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from flm_gateway.cli.common import add_config_argument, engine_sessions, resolve_config
from flm_gateway.cli.engines_command import print_table
from flm_gateway.config import LoadedConfig
from flm_gateway.core.text import printable
from flm_gateway.routing.table import RoutingTable


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("models", help="list the models behind the gateway")
    commands = parser.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    listing = commands.add_parser(
        "list", help="every model across engines, with context length, state and public names"
    )
    add_config_argument(listing)
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(func=run_list)


async def collect(loaded: LoadedConfig) -> dict[str, Any]:
    """{"models": [...], "engines": [...]} for the config's engines, checked now."""
    from flm_gateway.engines.directory import EngineDirectory
    from flm_gateway.routing.candidates import fallback_model

    directory = EngineDirectory(loaded.config.engines, engine_sessions(loaded))
    try:
        await directory.check_all(refresh_models=True)
    finally:
        await directory.close()
    table = RoutingTable(loaded.config.routes)
    models: list[dict[str, Any]] = []
    engines: list[dict[str, Any]] = []
    for state in directory.engines.values():
        engines.append(
            {"name": state.name, "kind": state.config.kind.value, "state": state.state.value}
            | ({"detail": state.detail} if state.detail else {})
        )
        listed = list(state.models.values())
        declared = [m for m in state.config.models if m not in state.models]
        for model_id, info in [(m.id, m) for m in listed] + [(m, None) for m in declared]:
            models.append(
                {
                    "id": model_id,
                    "engine": state.name,
                    "kind": state.config.kind.value,
                    "context_length": info.context_length if info else None,
                    "loaded": info.loaded if info else None,
                    "public_names": table.public_names(
                        state.name,
                        model_id,
                        info.aliases if info else (),
                        lambda name, upstream: fallback_model(directory.get(name), upstream),
                    ),
                }
            )
    return {"models": models, "engines": engines}


def _loaded_cell(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def run_list(args: argparse.Namespace) -> int:
    loaded = resolve_config(args)
    if loaded is None:
        return 1
    result = asyncio.run(collect(loaded))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = [
        [
            m["id"],
            m["engine"],
            str(m["context_length"] or "-"),
            _loaded_cell(m["loaded"]),
            ", ".join(m["public_names"]) or "(none: a route takes this name elsewhere)",
        ]
        for m in result["models"]
    ]
    print_table(["MODEL", "ENGINE", "CONTEXT", "LOADED", "PUBLIC NAMES"], rows)
    for engine in result["engines"]:
        if engine["state"] != "running-healthy":
            print(
                f"engine {engine['name']} ({engine['kind']}): {engine['state']}: "
                f"{printable(str(engine.get('detail', '')))}",
                file=sys.stderr,
            )
    return 0
