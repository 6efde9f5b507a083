"""`python -m bench.ab REV_A REV_B`: the gateway at two git revisions, measured alternately.

For a before/after number on a busy box: both revisions are exported (`git archive`)
into a temporary directory, both gateways run at once in front of one fake engine,
and each round measures A then B (B then A in odd rounds) with the same windows as the
main benchmark. The report gives each side's medians and the median of the paired
per-round differences B - A, which cancels most of the box's slow drifts.

`--workers-a N --workers-b M` run the sides with `server.workers` N and M (both
then keep their state in one redis-server, as workers need): e.g. workers 1 vs 2
of this tree, `python -m bench.ab . --workers-b 2`. The CPU per request then
counts every worker and the supervisor.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.measure import Round, Settings, measure_round
from bench.processes import Processes
from bench.report import proxy_us_per_request_c1, proxy_us_per_request_loaded
from bench.targets import REPO_ROOT, Target, start_engine, start_gateway, start_redis

METRICS: dict[str, Callable[[Round], float]] = {
    "req/s c=32": lambda r: r.loaded.rps,
    "proxy CPU µs/req c=32": proxy_us_per_request_loaded,
    "proxy CPU µs/req c=1": proxy_us_per_request_c1,
    "p50 c=1 ms": lambda r: r.latency.p50_ms,
    "p99 c=1 ms": lambda r: r.latency.p99_ms,
    "SSE TTFC p50 ms": lambda r: r.ttfc_ms,
    "SSE TTFC p99 ms": lambda r: r.ttfc_p99_ms,
    "proxy CPU µs/chunk (long streams)": lambda r: r.proxy_us_per_chunk,
    "proxy CPU µs/chunk (paced window)": lambda r: r.proxy_us_per_paced_chunk,
}


def export(revision: str, into: Path) -> Path:
    """The tree of `revision` (anything `git archive` takes) unpacked under `into`."""
    raw = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", revision],
        capture_output=True,
        check=True,
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        archive.extractall(into, filter="data")
    return into


def source(revision: str, into: Path) -> Path:
    """A directory given as is (e.g. a patched copy for an experiment), else `export`."""
    given = Path(revision)
    return given.resolve() if given.is_dir() else export(revision, into)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("before", help="git revision A (e.g. HEAD~1) or a source directory")
    parser.add_argument(
        "after", nargs="?", default="WORKTREE", help="revision B (default: this tree)"
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--load-seconds", type=float, default=3)
    parser.add_argument("--latency-seconds", type=float, default=2)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--workers-a", type=int, default=1, help="server.workers of A")
    parser.add_argument("--workers-b", type=int, default=1, help="server.workers of B")
    args = parser.parse_args(argv)
    settings = Settings(
        rounds=args.rounds,
        warmup_s=1,
        load_s=args.load_seconds,
        latency_s=args.latency_seconds,
        streams=args.streams,
    )
    with tempfile.TemporaryDirectory(prefix="flm-bench-ab-") as tmp, Processes(Path(tmp)) as procs:
        work = Path(tmp)
        sources = {
            "A": source(args.before, work / "src-a"),
            "B": REPO_ROOT if args.after == "WORKTREE" else source(args.after, work / "src-b"),
        }
        engine, engine_url = start_engine(procs, settings.chunks, settings.chunk_delay)
        workers = {"A": args.workers_a, "B": args.workers_b}
        redis_url = start_redis(procs, work) if max(workers.values()) > 1 else None
        gateways: dict[str, Target] = {
            side: start_gateway(
                procs,
                work,
                engine_url,
                source=source,
                name=f"gateway-{side}",
                workers=workers[side],
                redis_url=redis_url,
            )
            for side, source in sources.items()
        }
        rounds: dict[str, list[Round]] = {"A": [], "B": []}
        for index in range(settings.rounds):
            for side in ("A", "B") if index % 2 == 0 else ("B", "A"):
                print(f"round {index + 1}/{settings.rounds}: {side}", file=sys.stderr, flush=True)
                rounds[side].append(measure_round(gateways[side], engine, settings))
    print(
        f"A = {args.before} (workers {args.workers_a}), B = {args.after} "
        f"(workers {args.workers_b}); {settings.rounds} rounds, medians\n"
    )
    print("| metric | A | B | B - A (paired median) | B / A |")
    print("|---|---|---|---|---|")
    for name, metric in METRICS.items():
        a = [metric(r) for r in rounds["A"]]
        b = [metric(r) for r in rounds["B"]]
        diff = statistics.median(y - x for x, y in zip(a, b, strict=True))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {name} | {ma:,.2f} | {mb:,.2f} | {diff:+,.2f} | {mb / ma:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
