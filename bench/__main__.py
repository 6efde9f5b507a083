"""`python -m bench [--quick] [--scenario ...]`: measure direct, nginx and flm-gateway side by side.

Scenarios (`--scenario`, comma-separated, default `all`): `standard` (rounds of c=32
throughput, c=1 latency and paced SSE), `gomodel`, `onthebench`, `memory`, `soak`,
`startup` and `workers` (see bench/field.py and bench/scaling.py).
Prints the Markdown report on stdout (progress on stderr), saves it with the raw
numbers as JSON under `--out` (default bench/results/, not committed) and, with
`--write-docs`, replaces the results section of docs/performance.md. The whole run
is bounded by `--time-limit`; every process it started is stopped on any exit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench.document import markdown
from bench.field import FieldSettings
from bench.measure import Settings
from bench.suite import parse_scenarios, run

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1 s windows")
    parser.add_argument("--rounds", type=int, help="rounds over all targets (full: 3)")
    parser.add_argument("--load-seconds", type=float, help="c=32 window (full: 5)")
    parser.add_argument("--latency-seconds", type=float, help="c=1 window (full: 4)")
    parser.add_argument("--streams", type=int, help="paced SSE streams per round (full: 25)")
    parser.add_argument(
        "--scenario", default="all", type=parse_scenarios, help="comma-separated, or all"
    )
    parser.add_argument(
        "--workers",
        type=counts,
        help="gateway worker counts to compare, e.g. 1,2 (scenario workers; default 1)",
    )
    parser.add_argument("--requests", type=int, help="soak requests (full: 100,000)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"replace the results in {DOCS.name}"
    )
    parser.add_argument("--time-limit", type=float, default=3600, help="abort after this many s")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    base = Settings.quick() if args.quick else Settings.full()
    changes = {
        "rounds": args.rounds,
        "load_s": args.load_seconds,
        "latency_s": args.latency_seconds,
        "streams": args.streams,
    }
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def field_settings_from(args: argparse.Namespace) -> FieldSettings:
    base = FieldSettings.quick() if args.quick else FieldSettings()
    changes = {"workers": args.workers, "soak_requests": args.requests}
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def counts(text: str) -> tuple[int, ...]:
    """`1,2,4` as (1, 2, 4): each a positive integer."""
    try:
        found = tuple(int(part) for part in text.split(","))
    except ValueError:
        found = ()
    if not found or min(found) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of positive integers (1,2)")
    return found


def write_docs(report: str, path: Path = DOCS) -> None:
    text = path.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{path} has no {BEGIN} marker")
    path.write_text(f"{head}{BEGIN}\n{report}\n{END}{tail}")


def _abort(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGALRM:
        raise TimeoutError("the benchmark ran over its --time-limit")
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, _abort)
    signal.alarm(max(1, int(args.time_limit)))
    try:
        result = run(
            settings,
            field_settings_from(args),
            args.scenario,
            lambda message: print(message, file=sys.stderr, flush=True),
        )
    finally:
        signal.alarm(0)
    report = markdown(result)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (args.out / f"{stamp}.md").write_text(report)
    (args.out / f"{stamp}.json").write_text(
        json.dumps(dataclasses.asdict(result), indent=1, default=str)
    )
    if args.write_docs:
        write_docs(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
