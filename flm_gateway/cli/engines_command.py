"""`flm-gateway engines detect`: which engines run here, which are only installed.

The logic lives in `flm_gateway.engines.detect`; this module parses options,
prints a table (or `--json`) and manages the cache. Exit code 0 (a missing
engine is an answer, not an error); 1 for an invalid config or option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from flm_gateway.cli.common import add_config_argument, engine_sessions, resolve_config
from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.core.text import printable


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("engines", help="find and check inference engines")
    commands = parser.add_subparsers(dest="engines_command", metavar="COMMAND", required=True)
    detect = commands.add_parser(
        "detect",
        help="probe default ports, PATH and the engines in flm.yaml",
        description=(
            "Probe each engine declared in flm.yaml and each kind's default port "
            "(ollama 11434, vllm 8000, lmstudio 1234, llamacpp 8080), and look for the "
            "engines' programs on PATH. Results are cached (detection.cache_ttl, 5 min)."
        ),
    )
    add_config_argument(detect)
    detect.add_argument("--json", action="store_true", help="print JSON for scripts")
    detect.add_argument("--refresh", action="store_true", help="ignore the cache, probe again")
    detect.add_argument("--host", help="host whose default ports are probed (default 127.0.0.1)")
    detect.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="KIND=PORT",
        help="probe KIND on PORT instead of its default (PORT 'none' skips it); repeatable",
    )
    detect.add_argument("--timeout", type=float, help="seconds per probe request (default 1)")
    detect.set_defaults(func=run_detect)


def parse_ports(values: Sequence[str]) -> dict[EngineKind, int | None]:
    """{kind: port} from KIND=PORT options; raises ValueError naming the bad one."""
    kinds = ", ".join(kind.value for kind in EngineKind)
    ports: dict[EngineKind, int | None] = {}
    for value in values:
        name, sep, port = value.partition("=")
        try:
            kind = EngineKind(name)
        except ValueError:
            raise ValueError(f"--port {value!r}: unknown kind {name!r}; kinds: {kinds}") from None
        if port.lower() == "none":
            ports[kind] = None
        elif sep and port.isdigit() and 0 < int(port) < 65536:
            ports[kind] = int(port)
        else:
            raise ValueError(f"--port {value!r}: use KIND=PORT with PORT 1-65535 or none")
    return ports


def run_detect(args: argparse.Namespace) -> int:
    loaded = resolve_config(args)
    if loaded is None:
        return 1
    from flm_gateway.engines.detect import DetectCache, cache_key, detect, plan, which_in

    try:
        overrides = parse_ports(args.port)
    except ValueError as exc:
        print(f"flm-gateway engines detect: {exc}", file=sys.stderr)
        return 1
    settings = loaded.config.detection
    if args.timeout is not None:
        settings = settings.model_copy(update={"timeout": args.timeout})
    declared = loaded.config.engines if loaded.path is not None else []
    probes = plan(declared, settings, overrides, args.host)
    search_path = os.environ.get("PATH", os.defpath)
    key = cache_key(probes, search_path)
    cache = DetectCache(loaded.state_dir, settings.cache_ttl)
    cached = None if args.refresh else cache.load(key)
    if cached is not None:
        results, age = cached.results, cached.age
    else:
        results = asyncio.run(detect(probes, engine_sessions(loaded), which_in(search_path)))
        age = None
        try:
            cache.save(key, results)
        except OSError as exc:
            print(f"note: results not cached ({exc.strerror}: {cache.path})", file=sys.stderr)
    if args.json:
        payload = {
            "cached": age is not None,
            "age_seconds": round(age, 1) if age is not None else 0.0,
            "engines": [r.to_json() for r in results],
        }
        print(json.dumps(payload, indent=2))
        return 0
    rows = [
        [
            r.name,
            r.kind,
            r.state,
            r.url,
            r.version or "-",
            str(len(r.models)) if r.state.startswith("running") else "-",
            r.detail,
        ]
        for r in results
    ]
    print_table(["NAME", "KIND", "STATE", "URL", "VERSION", "MODELS", "DETAIL"], rows)
    if age is not None:
        print(f"(cached {age:.0f}s ago; --refresh probes again)")
    return 0


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last column is not padded. Cells show what
    engines report (model names, versions, errors): control characters are escaped."""
    rows = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        cells[-1] = str(row[-1])
        print("  ".join(cells).rstrip())
