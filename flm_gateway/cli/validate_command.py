"""`flm-gateway validate [FILE]` and `flm-gateway schema`: check a config without serving.

`validate` runs the loader (syntax, schema, cross-references), then every addon's
`prepare` (`app.gateway.serving_problems`: no port bound, no file written), so it
refuses everything a start would refuse, every problem at once, as `FILE:LINE:COL`.

`validate --effective` prints, for a valid file, the effective policy as JSON on stdout
(`observability.effective_policy`: routes and their candidates, token caps, CORS, rate
limit scopes, admin endpoints), like `caddy adapt`; its other lines go to stderr then,
so the output can be piped or diffed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flm_gateway.config import ConfigError, ConfigProblem, load_config
from flm_gateway.config.listener_settings import auth_summary, requires_api_key
from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.reference import markdown_reference
from flm_gateway.observability.effective_policy import render_effective_policy


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check flm.yaml (syntax, schema, references, what each addon needs) without serving",
    )
    parser.add_argument("file", nargs="?", type=Path, help="config file (default: ./flm.yaml)")
    parser.add_argument("--config", "-c", type=Path, dest="config", default=None, metavar="PATH")
    parser.add_argument(
        "--effective",
        action="store_true",
        help=(
            "print the effective policy as JSON (routes, token caps, CORS, rate limits, "
            "admin endpoints; no secrets); other lines go to stderr"
        ),
    )
    parser.set_defaults(func=run_validate)
    schema = subparsers.add_parser("schema", help="print the JSON Schema of flm.yaml")
    schema.add_argument(
        "--markdown", action="store_true", help="print the key reference in Markdown instead"
    )
    schema.set_defaults(func=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    path: Path = args.file or args.config or Path("flm.yaml")
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        return _refuse(path, exc.problems)
    # Imported here: the gateway (mitmproxy) is needed only once the file itself is valid.
    from flm_gateway.app.gateway import serving_problems

    problems = serving_problems(loaded)
    if problems:
        return _refuse(path, problems)
    config = loaded.config
    out = sys.stderr if args.effective else sys.stdout
    for warning in loaded.warnings:
        print(warning.render("warning"), file=out)
    for line in auth_summary(config.listeners):
        print(f"{path}: {line}", file=out)
    keyed = [listener.name for listener in config.listeners if requires_api_key(listener)]
    if keyed and not config.security.keys:
        print(
            f"{path}: note: this file declares no API key; unless one was created with "
            f"`flm-gateway keys create`, every request to {', '.join(keyed)} gets 401 "
            "(`flm-gateway check` looks in the state store)",
            file=out,
        )
    print(
        f"{path}: valid ({len(config.listeners)} listener(s), {len(config.engines)} engine(s), "
        f"{len(config.routes)} route(s))"
        + (f", {len(loaded.warnings)} warning(s)" if loaded.warnings else ""),
        file=out,
    )
    if args.effective:
        sys.stdout.write(render_effective_policy(config))
    return 0


def _refuse(path: Path, problems: list[ConfigProblem]) -> int:
    for problem in problems:
        print(problem)
    print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
    return 1


def schema_json() -> str:
    """The JSON Schema of flm.yaml, as committed in schemas/flm.schema.json."""
    schema: dict[str, Any] = GatewayConfig.model_json_schema()
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://flm-gateway.dev/schemas/flm.schema.json",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def run_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(markdown_reference() if args.markdown else schema_json())
    return 0
