"""The things measured: the fake engine itself, nginx in front of it, flm-gateway in front of it.

Each target is a URL plus the process ids whose CPU time and memory count as "the proxy"
(none for direct). nginx runs as the Debian package does, one master and one worker
(`worker_processes 1`, so it uses one core like the single-process gateway), with an
upstream keep-alive pool and `proxy_buffering off` so SSE passes through unbuffered.
flm-gateway runs as users run it, `python -m flm_gateway run --config FILE`, with its
the whole default pipeline (policies unconfigured), one listener, one engine and one exact route
whose upstream model is the client's (the request body is forwarded as it came).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procfs
from bench.processes import Child, Processes, clean_env, free_port, wait_for_line, wait_http

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench-model"
CHAT_PATH = "/v1/chat/completions"
START_TIMEOUT = 30.0


@dataclass
class Target:
    name: str
    url: str
    """Base URL (no path)."""
    description: str
    main: Child | None = None
    """The proxy's main process (None: direct to the engine); its descendants belong to it."""

    @property
    def pids(self) -> list[int]:
        """The proxy's processes now: the main one and its children (workers), recursively."""
        return procfs.tree(self.main.pid) if self.main is not None else []

    def cpu_seconds(self) -> float:
        return sum(procfs.cpu_seconds(pid) for pid in self.pids)

    def memory_by_process(self, *, pss: bool = False) -> list[procfs.Memory]:
        return [procfs.memory(pid, pss=pss) for pid in self.pids]

    def memory(self, *, pss: bool = False) -> procfs.Memory:
        return sum(self.memory_by_process(pss=pss), procfs.Memory(0, 0, 0))

    def check_alive(self) -> None:
        if self.main is not None:
            self.main.check_alive()


def start_engine(
    procs: Processes, chunks: int, chunk_delay: float, name: str = "engine"
) -> tuple[Child, str]:
    """The fake vLLM engine (`tests.support.fake_engines`, uvloop when installed)."""
    child = procs.start(
        name,
        [
            sys.executable,
            "-m",
            "tests.support.fake_engines",
            "--kind",
            "vllm",
            "--port",
            str(free_port()),
            "--models",
            MODEL,
            "--chunks",
            str(chunks),
            "--chunk-delay",
            str(chunk_delay),
            "--max-records",
            "1000",
        ],
        env=clean_env(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1"),
        cwd=REPO_ROOT,
    )
    url = wait_for_line(child, "READY ", START_TIMEOUT)
    return child, url


def nginx_config(prefix: Path, port: int, engine_url: str, workers: int = 1) -> str:
    upstream = engine_url.removeprefix("http://")
    # Only root may switch users; as root the worker runs as nobody (the package default).
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    return f"""\
{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream engine {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def start_nginx(
    procs: Processes, workdir: Path, engine_url: str, *, workers: int = 1, name: str = "nginx"
) -> Target:
    prefix = workdir / name
    prefix.mkdir(mode=0o755)
    port = free_port()
    config = prefix / "nginx.conf"
    config.write_text(nginx_config(prefix, port, engine_url, workers))
    child = procs.start(
        name,
        [
            "nginx",
            "-p",
            str(prefix),
            "-c",
            str(config),
            "-e",
            str(prefix / "error.log"),
            "-g",
            "daemon off; master_process on;",
        ],
        stop_signal=signal.SIGTERM,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(child, engine_url + "/health", START_TIMEOUT)
    wait_http(child, url + "/health", START_TIMEOUT)
    return Target(
        "nginx",
        url,
        f"nginx, master + {workers} worker(s), upstream keepalive, proxy_buffering off",
        child,
    )


def gateway_config(
    workdir: Path,
    port: int,
    engine_url: str,
    workers: int = 1,
    *,
    redis_url: str | None = None,
    admin_port: int | None = None,
    client_cap: int | None = None,
) -> str:
    """The benchmark's flm.yaml. Each optional key is written only when asked for, so that
    older revisions, which know none of them, still start in `bench.ab`: `server.workers`
    when `workers` > 1 (which needs `redis_url`, state.backend redis; `admin_port` gives
    the supervisor an admin listener, whose /readyz says every worker serves), and
    `client_cap` as `server.limits.max_connections_per_client`."""
    server = f"\n  workers: {workers}" if workers != 1 else ""
    if client_cap is not None:
        server += f"\n  limits: {{max_connections_per_client: {client_cap}}}"
    top = f'state: {{backend: redis, redis_url: "{redis_url}"}}\n' if redis_url else ""
    if admin_port is not None:
        top += f"admin: {{bind: 127.0.0.1:{admin_port}}}\n"
    return f"""\
version: 1
server:
  state_dir: "{workdir / "gateway-state"}"
  log_level: info{server}
{top}listeners:
  - name: main
    bind: 127.0.0.1:{port}
    tls: {{mode: local-http}}
engines:
  - {{name: engine, kind: vllm, url: "{engine_url}"}}
routes:
  - {{model: {MODEL}, engine: engine}}
"""


def start_gateway(
    procs: Processes,
    workdir: Path,
    engine_url: str,
    *,
    source: Path = REPO_ROOT,
    name: str = "flm-gateway",
    workers: int = 1,
    redis_url: str | None = None,
    client_cap: int | None = None,
) -> Target:
    """`python -m flm_gateway run` with the package from `source` (a checkout's root); with
    `workers` > 1 (and `redis_url`) its supervisor's workers count as the proxy too."""
    port = free_port()
    admin_port = free_port() if workers > 1 else None
    home = workdir / name
    home.mkdir()
    config = home / "flm.yaml"
    config.write_text(
        gateway_config(
            home,
            port,
            engine_url,
            workers,
            redis_url=redis_url,
            admin_port=admin_port,
            client_cap=client_cap,
        )
    )
    child = procs.start(
        name,
        [sys.executable, "-m", "flm_gateway", "run", "--config", str(config)],
        env=clean_env(PYTHONPATH=str(source), PYTHONUNBUFFERED="1", HOME=str(home)),
        cwd=home,
        stop_signal=signal.SIGTERM,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(child, url + "/readyz", START_TIMEOUT)
    if admin_port is not None:
        wait_http(child, f"http://127.0.0.1:{admin_port}/readyz", START_TIMEOUT)  # all workers
    processes = f"server.workers: {workers}" if workers > 1 else "1 process"
    return Target(name, url, f"python -m flm_gateway run, {processes}, full pipeline", child)


def start_redis(procs: Processes, workdir: Path) -> str:
    """A redis-server without persistence (the state of `server.workers`); its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("bench: server.workers needs redis-server (apt-get install redis)")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    child = procs.start("redis", [*command, "--appendonly", "no", "--dir", str(workdir)])
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        child.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise RuntimeError("bench: redis-server did not start")
