"""The scenarios that start their own processes: start-up time and worker processes.

- `startup`: from just before the process is spawned to the first 200 on its readiness
  URL (the gateway's `/readyz`, nginx proxying the engine's `/health`, the engine's own
  `/health` for direct), polled every 10 ms; the median of `startup_runs` starts.
- `workers`: for each count N of `--workers`, a fresh gateway with `server: {workers: N}`
  in its flm.yaml and a fresh nginx with `worker_processes N`, one c=32 window each
  after a warm-up: req/s and CPU per request, the CPU summed over the whole process tree
  (supervisor and workers). Workers need `state.backend: redis`: when any N > 1, a
  redis-server runs and every gateway row (N = 1 too) keeps its state there. A count
  the gateway refuses (`flm-gateway validate` fails: a revision without workers, or no
  redis-server) is skipped with the reason in the table's notes.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bench.field import MB, Bench, FieldSettings, Scenario
from bench.load import run_wrk
from bench.measure import Settings, window, wrk_cpu
from bench.processes import clean_env
from bench.targets import (
    REPO_ROOT,
    Target,
    gateway_config,
    start_engine,
    start_gateway,
    start_nginx,
    start_redis,
)


def _timed(start: Callable[[int], object], index: int) -> float:
    begin = time.perf_counter()
    start(index)
    return time.perf_counter() - begin


def startup(bench: Bench, settings: FieldSettings, base: Settings) -> Scenario:
    runs = settings.startup_runs
    scenario = Scenario("startup", f"Start-up to ready (median of {runs})")
    starters: dict[str, Callable[[int], object]] = {
        "direct": lambda i: start_engine(
            bench.procs, base.chunks, base.chunk_delay, name=f"engine-start-{i}"
        ),
        "nginx": lambda i: start_nginx(
            bench.procs, bench.workdir, bench.engine_url, name=f"nginx-start-{i}"
        ),
        "flm-gateway": lambda i: start_gateway(
            bench.procs, bench.workdir, bench.engine_url, name=f"gateway-start-{i}"
        ),
    }
    for name, starter in starters.items():
        times = []
        for index in range(runs):
            times.append(_timed(starter, index))
            bench.procs.stop_newest()
        bench.log(f"startup: {name} " + ", ".join(f"{t:.2f}" for t in times) + " s")
        scenario.put("start-up to ready s", name, statistics.median(times))
    return scenario


def refusal(bench: Bench, workers: int, redis_url: str) -> str | None:
    """What `flm-gateway validate` says about `server.workers: N`, or None if it accepts it."""
    home = bench.workdir / f"validate-workers-{workers}"
    home.mkdir(exist_ok=True)
    config = home / "flm.yaml"
    config.write_text(gateway_config(home, 1, bench.engine_url, workers, redis_url=redis_url))
    done = subprocess.run(
        [sys.executable, "-m", "flm_gateway", "validate", "--config", str(config)],
        env=clean_env(PYTHONPATH=str(REPO_ROOT), HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return None
    return (done.stdout + done.stderr).strip().splitlines()[0].replace(str(config), "flm.yaml")


def _redis(bench: Bench) -> tuple[str | None, str]:
    """A redis-server's URL for `state.backend: redis`, or None and why there is none."""
    try:
        return start_redis(bench.procs, bench.workdir), ""
    except RuntimeError as exc:
        return None, str(exc).removeprefix("bench: ")


def _measure(
    bench: Bench, scenario: Scenario, row: str, label: str, target: Target, base: Settings
) -> None:
    """Idle memory, then one c=32 window on `target`, put in `scenario` as `row`; then
    `target` is stopped."""
    c = base.connections
    if target.main is not None:
        time.sleep(0.5)
        idle = target.memory_by_process(pss=True)
        largest = max(m.rss_kib for m in idle) * 1024 / MB
        scenario.put(f"RSS idle, largest process MB, {label}", row, largest)
        scenario.put(
            f"PSS idle, all processes MB, {label}", row, sum(m.pss_kib for m in idle) * 1024 / MB
        )
    run_wrk(target.url, c, base.warmup_s)
    processes = len(target.pids)
    result, cpu = window(target, bench.engine, lambda: run_wrk(target.url, c, base.load_s), wrk_cpu)
    scenario.put(f"req/s c={c}, {label}", row, result.rps)
    if target.main is not None:
        per_request = 1e6 * cpu.proxy_s / result.requests if result.requests else float("nan")
        scenario.put(f"proxy CPU µs/req, {label}", row, per_request)
        scenario.put(f"processes, {label}", row, processes)
        target.main.stop()


def workers(bench: Bench, settings: FieldSettings, base: Settings) -> Scenario:
    counts = ", ".join(map(str, settings.workers))
    scenario = Scenario("workers", f"Worker processes: {counts}")
    _measure(bench, scenario, "direct", "direct", bench.targets["direct"], base)
    # Workers need state.backend redis; when any count does, every gateway row uses it,
    # so that the rows differ in the worker count only.
    redis_url, no_redis = _redis(bench) if max(settings.workers) > 1 else (None, "")
    if redis_url is not None:
        scenario.notes.append("every flm-gateway row keeps its state in one redis-server")
    for count in settings.workers:
        label = f"{count} worker(s)"
        bench.log(f"workers: {label}")
        nginx = start_nginx(
            bench.procs, bench.workdir, bench.engine_url, workers=count, name=f"nginx-w{count}"
        )
        _measure(bench, scenario, "nginx", label, nginx, base)
        refused = None
        if count > 1:
            refused = refusal(bench, count, redis_url) if redis_url else no_redis
        if refused:
            scenario.notes.append(f"{label}: flm-gateway skipped: {refused}")
            bench.log(f"workers: flm-gateway with {label} skipped: {refused}")
            continue
        gateway = start_gateway(
            bench.procs,
            bench.workdir,
            bench.engine_url,
            name=f"gateway-w{count}",
            workers=count,
            redis_url=redis_url,
        )
        _measure(bench, scenario, "flm-gateway", label, gateway, base)
    add_scaling(scenario, base.connections, settings.workers)
    return scenario


def add_scaling(scenario: Scenario, connections: int, counts: tuple[int, ...]) -> None:
    """Put `req/s vs 1 worker, N worker(s)` for each N > 1 that has a 1-worker row."""
    one = scenario.values.get(f"req/s c={connections}, 1 worker(s)", {})
    for count in counts:
        many = scenario.values.get(f"req/s c={connections}, {count} worker(s)", {})
        for row in ("nginx", "flm-gateway"):
            if count > 1 and row in one and row in many:
                scenario.put(f"req/s vs 1 worker, {count} worker(s)", row, many[row] / one[row])
