"""`python -m bench.profile`: where flm-gateway's CPU per request goes, sampled with py-spy.

Starts the fake engine and the gateway (as the benchmark does), loads the gateway with
wrk at c=32, and records it with `py-spy record --format raw` for `--seconds`. Each
sample (a Python stack of the gateway's one thread) is put in one bucket, first match:

1. our addons: any frame from flm_gateway other than the start-up frames, so it
   includes the stdlib and mitmproxy calls our hooks make;
2. mitmproxy hook dispatch: under `AddonManager` (calling every addon for every event);
3. socket I/O: the innermost frames are asyncio transport reads and writes (syscalls);
4. mitmproxy HTTP/1: the HTTP layer, HTTP/1 parsing and assembly, flow objects;
5. mitmproxy connection and layer machinery (`proxy/server.py`, `layer.py`, ...);
6. asyncio event loop and tasks; 7. other.

Shares become µs per request by multiplying with the gateway's CPU time per request
over the same window (py-spy's own pauses included, so that figure is a little high).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load import LUA, run_wrk
from bench.processes import Processes
from bench.targets import CHAT_PATH, MODEL, start_engine, start_gateway

ROOT = Path(__file__).resolve().parents[1]
STARTUP = ("flm_gateway/__main__.py", "flm_gateway/cli/", "flm_gateway/app/gateway.py")
WRAPPERS = ("flm_gateway/proxy/addon_chain.py", "flm_gateway/proxy/fail_closed.py")
DISPATCH = ("(mitmproxy/addonmanager.py", "(mitmproxy/hooks.py")
NEUTRAL = (
    "(contextlib.py", "(dataclasses.py", "(<frozen abc>", "(<frozen _collections_abc>",
    "(typing.py", "(enum.py", "(functools.py", "(copy.py", "(inspect.py", "(re/", "(weakref.py",
)  # fmt: skip
"""Generic stdlib helpers: their time belongs to whoever called them."""
SOCKET = ("(asyncio/selector_events.py", "(asyncio/transports.py", "(asyncio/streams.py")
HTTP = (
    "(mitmproxy/proxy/layers/http/", "(mitmproxy/net/", "(mitmproxy/http.py",
    "(mitmproxy/coretypes/", "(mitmproxy/flow.py", "(mitmproxy/utils/", "(mitmproxy/connection.py",
    "(h11/",
)  # fmt: skip
BUCKETS = (
    "our addons (flm_gateway, incl. what they call)",
    "mitmproxy hook dispatch (AddonManager, Hook.args)",
    "socket I/O (asyncio transports, send/recv)",
    "mitmproxy HTTP/1 layer, parsing, flow objects",
    "mitmproxy connection handler and layer machinery",
    "asyncio event loop and tasks",
    "other",
)


@dataclass(frozen=True)
class Sample:
    frames: tuple[str, ...]
    count: int


def read_raw(path: Path) -> list[Sample]:
    """py-spy's raw (collapsed) format: `frame;frame;... count` per line."""
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples.append(Sample(tuple(stack.split(";")), int(count)))
    return samples


def is_ours(frame: str) -> bool:
    return "flm_gateway/" in frame and not any(part in frame for part in STARTUP)


def function(frame: str) -> str:
    """`Class.method (path/file.py)`: the frame without its line number."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0] or where.rstrip(')')})"


def bucket(frames: tuple[str, ...]) -> str:
    """The bucket of one stack: ours or dispatch anywhere on it, else its innermost owner."""
    if any(is_ours(f) for f in frames):
        return BUCKETS[0]
    if any(d in f for d in DISPATCH for f in frames):
        return BUCKETS[1]
    python = [f for f in frames if ".py:" in f or "(<frozen" in f]
    owner = next((f for f in reversed(python) if not any(n in f for n in NEUTRAL)), "")
    if any(x in owner for x in SOCKET):
        return BUCKETS[2]
    if any(x in owner for x in HTTP):
        return BUCKETS[3]
    if "(mitmproxy/" in owner:
        return BUCKETS[4]
    if "(asyncio/" in owner or "(selectors.py" in owner:
        return BUCKETS[5]
    return BUCKETS[6]


def our_hook(frames: tuple[str, ...]) -> str | None:
    """The outermost frame of ours that is a hook (not the chain or guard around it)."""
    ours = [f for f in frames if is_ours(f) and not any(w in f for w in WRAPPERS)]
    return function(ours[0]) if ours else None


def analyse(samples: list[Sample], us_per_request: float) -> str:
    total = sum(s.count for s in samples)
    buckets: Counter[str] = Counter()
    hooks: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for sample in samples:
        buckets[bucket(sample.frames)] += sample.count
        hook = our_hook(sample.frames)
        if hook is not None:
            hooks[hook] += sample.count
        python = [f for f in sample.frames if ".py:" in f or "<frozen" in f]
        leaves[function(python[-1] if python else sample.frames[-1])] += sample.count

    def row(name: str, count: int) -> str:
        share = count / total if total else 0.0
        return f"| {name} | {100 * share:.1f}% | {share * us_per_request:.0f} |"

    lines = [
        f"{total} samples; gateway CPU {us_per_request:.0f} µs per request over the window.",
        "",
        "| where | share of samples | µs per request |",
        "|---|---|---|",
        *(row(name, buckets[name]) for name in BUCKETS),
        "",
        "| our hook (inclusive) | share | µs per request |",
        "|---|---|---|",
        *(row(name, count) for name, count in hooks.most_common(12)),
        "",
        "| innermost Python function (self) | share | µs per request |",
        "|---|---|---|",
        *(row(name, count) for name, count in leaves.most_common(25)),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--source", type=Path, default=ROOT, help="profile the gateway from this source tree"
    )
    parser.add_argument("--raw", type=Path, help="analyse this py-spy raw file instead")
    parser.add_argument("--us-per-request", type=float, default=0.0, help="with --raw")
    args = parser.parse_args(argv)
    if args.raw is not None:
        print(analyse(read_raw(args.raw), args.us_per_request))
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"profile-{time.strftime('%Y%m%dT%H%M%S')}.raw"
    with tempfile.TemporaryDirectory(prefix="flm-profile-") as tmp, Processes(Path(tmp)) as procs:
        _, engine_url = start_engine(procs, 64, 0.002)
        gateway = start_gateway(procs, Path(tmp), engine_url, source=args.source.resolve())
        assert gateway.main is not None
        run_wrk(gateway.url, args.connections, 2)  # warm-up
        seconds = max(1, round(args.seconds))
        wrk = subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{args.connections}",
                f"-d{seconds + 3}s",
                "-s",
                str(LUA),
                gateway.url + CHAT_PATH,
                "--",
                MODEL,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(1)
            cpu0 = gateway.cpu_seconds()
            subprocess.run(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(gateway.main.pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                ],
                check=True,
                capture_output=True,
                timeout=seconds + 30,
            )
            cpu = gateway.cpu_seconds() - cpu0
            output, _ = wrk.communicate(timeout=seconds + 30)
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()
    line = next(x for x in output.splitlines() if x.startswith("BENCH "))
    data = json.loads(line.removeprefix("BENCH "))
    # wrk ran seconds + 3 s; py-spy saw `seconds` of it: scale the request count.
    requests = data["requests"] * seconds / (data["duration_us"] / 1e6)
    report = analyse(read_raw(raw), 1e6 * cpu / requests)
    print(f"raw stacks: {raw}\n\n{report}")
    raw.with_suffix(".md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
