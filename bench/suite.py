"""One benchmark run: start the targets, run the chosen scenarios, stop everything.

`standard` is the rounds of `bench.measure` (c=32 throughput, c=1 latency, paced SSE);
the others come from `bench.field` and `bench.scaling`. All of them run in one process
tree against one fake engine, so one command measures every target side by side.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import field, procfs, scaling
from bench.field import Bench, FieldSettings
from bench.measure import (
    RunResult,
    Settings,
    TargetResult,
    machine_facts,
    measure_round,
)
from bench.processes import Processes
from bench.targets import Target, start_engine, start_gateway, start_nginx

TARGET_NAMES = ("direct", "nginx", "flm-gateway")
SCENARIOS = ("standard", "gomodel", "onthebench", "memory", "soak", "startup", "workers")


def parse_scenarios(text: str) -> tuple[str, ...]:
    """`all` or a comma-separated list of SCENARIOS, in the order given."""
    names = SCENARIOS if text == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise ValueError(f"unknown scenario {unknown or text!r}; choose from all, {SCENARIOS}")
    return names


def _rounds(bench: Bench, settings: Settings, result: RunResult) -> None:
    for index in range(settings.rounds):
        order = TARGET_NAMES[index % 3 :] + TARGET_NAMES[: index % 3]
        for name in order:
            bench.log(f"round {index + 1}/{settings.rounds}: {name}")
            round_ = measure_round(bench.targets[name], bench.engine, settings)
            result.targets[name].rounds.append(round_)


def run(
    settings: Settings,
    extra: FieldSettings,
    scenarios: Sequence[str],
    log: Callable[[str], None],
) -> RunResult:
    """Start engine, nginx and gateway; run `scenarios` in order; stop them all."""
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    clock = time.perf_counter()
    result = RunResult(settings, started, machine_facts(), procfs.loadavg())
    with tempfile.TemporaryDirectory(prefix="flm-bench-") as tmp, Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        engine, engine_url = start_engine(procs, settings.chunks, settings.chunk_delay)
        targets = {"direct": Target("direct", engine_url, "the fake vLLM engine itself (aiohttp)")}
        result.targets["direct"] = TargetResult("direct", targets["direct"].description, 0.0, None)
        starters: dict[str, Callable[[], Target]] = {
            "nginx": lambda: start_nginx(procs, workdir, engine_url),
            # Every connection comes from 127.0.0.1: without lifting the per-client cap
            # (128, a security policy) the stream ramp would measure that cap.
            "flm-gateway": lambda: start_gateway(procs, workdir, engine_url, client_cap=0),
        }
        for name, starter in starters.items():
            begin = time.perf_counter()
            targets[name] = starter()
            startup = time.perf_counter() - begin
            time.sleep(0.5)
            target = targets[name]
            idle_each = target.memory_by_process(pss=True)
            result.targets[name] = TargetResult(
                name, target.description, startup, target.memory(), idle_each=idle_each
            )
            log(f"started {name} in {startup:.1f}s")
        bench = Bench(procs, workdir, engine, engine_url, targets, log)
        idle = {name: r.idle_each for name, r in result.targets.items()}
        steps: dict[str, Callable[[], None]] = {
            "standard": lambda: _rounds(bench, settings, result),
            "gomodel": lambda: result.scenarios.append(field.gomodel(bench, extra)),
            "onthebench": lambda: result.scenarios.append(field.onthebench(bench, extra)),
            "memory": lambda: result.scenarios.append(field.memory(bench, extra, idle)),
            "soak": lambda: result.scenarios.append(field.soak(bench, extra)),
            "startup": lambda: result.scenarios.append(scaling.startup(bench, extra, settings)),
            "workers": lambda: result.scenarios.append(scaling.workers(bench, extra, settings)),
        }
        for name in scenarios:
            steps[name]()
            for target in targets.values():
                target.check_alive()
            engine.check_alive()
        for name, target in targets.items():
            if target.main is not None:
                result.targets[name].after = target.memory()
    result.load_after = procfs.loadavg()
    result.seconds = time.perf_counter() - clock
    return result
