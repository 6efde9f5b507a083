"""`python -m bench.failover`: what one failover adds to an answer.

Two fake vLLM engines (`tests.support.fake_engines`) behind one gateway. Route `direct`
goes to engine `a`; route `failover` goes to engine `b`, which answers every chat
completion 503 before any byte, with `a` as its fallback (passive health off for `b`, so
every request fails over). Sequential requests (c=1), alternating the two routes, over
keep-alive connections; for each route the median and p90 of the whole answer
(non-streamed) and of the time to the first chunk (streamed). The difference of the
medians is the cost of one failover: holding and reading the 503, the `flm_failover`
hook, and the re-send on a new connection.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.processes import Processes, clean_env, free_port, wait_for_line, wait_http
from bench.targets import REPO_ROOT, START_TIMEOUT

CONFIG = """\
version: 1
server: {{state_dir: "{state}", log_level: warning}}
listeners:
  - {{name: main, bind: "127.0.0.1:{port}"}}
engines:
  - {{name: a, kind: vllm, url: "{a}"}}
  - {{name: b, kind: vllm, url: "{b}", health: {{max_fails: 0}}}}
routes:
  - {{model: direct, engine: a, upstream_model: m}}
  - {{model: failover, engine: b, upstream_model: m, fallback: [{{engine: a, upstream_model: m}}]}}
"""


def start_engine(procs: Processes, name: str) -> str:
    child = procs.start(
        name,
        [sys.executable, "-m", "tests.support.fake_engines", "--kind", "vllm",
         "--port", str(free_port()), "--models", "m", "--chunks", "8", "--chunk-delay", "0",
         "--max-records", "100"],
        env=clean_env(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1"),
        cwd=REPO_ROOT,
    )  # fmt: skip
    return wait_for_line(child, "READY ", START_TIMEOUT)


def timed(connection: http.client.HTTPConnection, model: str, stream: bool) -> float:
    """Seconds to the whole answer, or (streamed) to its first chunk."""
    body = json.dumps(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    )
    started = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    response = connection.getresponse()
    if stream:
        response.read1(1)
        first = time.perf_counter() - started
        response.read()
        assert response.status == 200, response.status
        return first
    response.read()
    assert response.status == 200, response.status
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per route and mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Processes(Path(tmp)) as procs:
        a, b = start_engine(procs, "a"), start_engine(procs, "b")
        fault = urllib.request.Request(
            b + "/_fake/fault",
            json.dumps({"status": 503, "paths": ["/v1/chat"]}).encode(),
            {"content-type": "application/json"},
        )
        urllib.request.urlopen(fault, timeout=5).close()
        port = free_port()
        config = Path(tmp) / "flm.yaml"
        config.write_text(CONFIG.format(state=Path(tmp) / "state", port=port, a=a, b=b))
        gateway = procs.start(
            "gateway",
            [sys.executable, "-m", "flm_gateway", "run", "--config", str(config)],
            env=clean_env(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", HOME=tmp),
            cwd=Path(tmp),
        )
        wait_http(gateway, f"http://127.0.0.1:{port}/readyz", START_TIMEOUT)
        results: dict[tuple[str, bool], list[float]] = {}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for stream in (False, True):
            for _ in range(20):  # warm-up
                for model in ("direct", "failover"):
                    timed(connection, model, stream)
            for _ in range(args.requests):
                for model in ("direct", "failover"):
                    results.setdefault((model, stream), []).append(timed(connection, model, stream))
        print(f"{args.requests} sequential requests per row, c=1, keep-alive")
        print("| mode | route | p50 ms | p90 ms |")
        print("| --- | --- | --- | --- |")
        for (model, stream), samples in results.items():
            samples.sort()
            mode = "stream, first chunk" if stream else "whole answer"
            p50, p90 = statistics.median(samples), samples[int(len(samples) * 0.9)]
            print(f"| {mode} | {model} | {p50 * 1000:.2f} | {p90 * 1000:.2f} |")
        for stream in (False, True):
            added = statistics.median(results[("failover", stream)]) - statistics.median(
                results[("direct", stream)]
            )
            print(
                f"one failover adds {added * 1000:.2f} ms (p50, {'stream' if stream else 'whole'})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
