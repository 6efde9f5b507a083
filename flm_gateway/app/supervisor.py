"""`server.workers` above 1: one supervisor process and N gateway workers.

The supervisor runs no mitmproxy and serves no API traffic. It:
- takes the state directory's lock and writes the pid file (so `flm-gateway
  reload` signals it), checks that every listener's port is free (`ports_taken`:
  SO_REUSEPORT would otherwise let the workers join a port another process of the
  same user holds with it, silently sharing its traffic), then starts N workers
  (`flm-gateway run --worker I`, each a full gateway, see `app.worker_link`) in
  sessions of their own (a terminal's Ctrl-C reaches the supervisor only) and
  waits until every one reports ready;
  a worker that fails to start fails the start (the others are stopped, exit 1);
- restarts a worker that exits while serving, after a backoff that doubles from
  `RESTART_DELAY` to `MAX_RESTART_DELAY` and resets once a worker has run for
  `STABLE_AFTER` (as systemd's `Restart=` with a rate limit);
- forwards SIGHUP to every worker (each reloads the file: all or nothing per
  worker; the file watcher of each worker reloads it too) and re-reads the
  file's `admin:` section for its own listener;
- on SIGINT/SIGTERM forwards SIGTERM to every worker, which drain as a single
  gateway does; a worker still running `server.drain_timeout` + `KILL_GRACE`
  later is killed. Then it releases the lock and exits 0;
- serves the admin listener (`admin:`): /metrics merges every worker's
  (`observability.metrics_sum`) plus its own `flm_workers`,
  `flm_workers_serving` and `flm_worker_restarts_total`; /readyz is 200 only
  when every worker is running and answers its own /readyz with 200; /healthz
  is 200 while the supervisor runs (it restarts what crashed), naming the
  workers serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from flm_gateway import __version__
from flm_gateway.app.process_logs import setup_logging
from flm_gateway.app.worker_link import parse_ready
from flm_gateway.config import ConfigError, LoadedConfig, load_config
from flm_gateway.config.binds import listen_host
from flm_gateway.httpio.http_client import HttpClientError, HttpSession
from flm_gateway.observability.admin_listener import AdminBindError, AdminServer, Status
from flm_gateway.observability.exposition import Counter, Gauge, render
from flm_gateway.observability.metrics_sum import merge_expositions
from flm_gateway.proxy.port_owner import bind_failure
from flm_gateway.state.process import (
    remove_pid_file,
    serve_locked,
    write_pid_file,
)

log = logging.getLogger("flm_gateway.supervisor")

RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 10.0
STABLE_AFTER = 10.0
START_TIMEOUT = 60.0
KILL_GRACE = 5.0
SCRAPE_TIMEOUT = 2.0


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    admin_port: int | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = field(default=0)
    """Exits in a row without having run `STABLE_AFTER` (sets the backoff)."""

    @property
    def serving(self) -> bool:
        return (
            self.process is not None
            and self.process.returncode is None
            and self.admin_port is not None
        )


async def _loopback(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class Supervisor:
    """The supervisor of `count` workers serving `loaded` (see the module docstring)."""

    def __init__(self, loaded: LoadedConfig, count: int, log_format: str) -> None:
        if loaded.path is None:
            raise ValueError("workers need a config file")
        self.config_path = loaded.path
        self.loaded = loaded
        self.workers = [Worker(index) for index in range(1, count + 1)]
        self._log_format = log_format
        self._stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._session = HttpSession(_loopback)
        self.admin = AdminServer(self)

    # -- workers ---------------------------------------------------------------------------

    def _command(self, worker: Worker, ready_fd: int) -> list[str]:
        return [
            sys.executable, "-m", "flm_gateway", "run",
            "--config", str(self.config_path),
            "--log-format", self._log_format,
            "--worker", str(worker.index),
            "--ready-fd", str(ready_fd),
        ]  # fmt: skip

    async def _spawn(self, worker: Worker) -> bool:
        """Start `worker`; True once it reported ready, False when it exited first."""
        read_fd, write_fd = os.pipe()
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self._command(worker, write_fd),
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        worker.started_at = time.monotonic()
        worker.admin_port = None
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)
        try:
            line = await asyncio.to_thread(_read_line, read_fd)
        finally:
            os.close(read_fd)
        port = parse_ready(line)
        if port is None:
            await worker.process.wait()
            return False
        worker.admin_port = port
        return True

    async def start(self) -> bool:
        """Start every worker; False (all stopped again) when one does not come up."""
        try:
            started = await asyncio.wait_for(
                asyncio.gather(*(self._spawn(worker) for worker in self.workers)),
                START_TIMEOUT,
            )
        except TimeoutError:
            started = [worker.serving for worker in self.workers]
        if not all(started):
            failed = [w.index for w, ok in zip(self.workers, started, strict=True) if not ok]
            log.error("worker(s) %s did not start; stopping", ", ".join(map(str, failed)))
            await self._terminate_all()
            return False
        self._watchers = [
            asyncio.create_task(self._keep_running(worker), name=f"worker-{worker.index}")
            for worker in self.workers
        ]
        log.info("%d workers serving", len(self.workers))
        return True

    async def _keep_running(self, worker: Worker) -> None:
        """Restart `worker` whenever it exits, until the supervisor stops."""
        while (process := worker.process) is not None:
            code = await process.wait()
            worker.admin_port = None
            if self._stopping.is_set():
                return
            ran = time.monotonic() - worker.started_at
            worker.failures = 0 if ran >= STABLE_AFTER else worker.failures + 1
            delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** max(0, worker.failures - 1))
            log.error(
                "worker %d (pid %d) exited with %s; restarting in %.1fs",
                worker.index,
                process.pid,
                _exit_text(code),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            worker.restarts += 1
            if await self._spawn(worker):
                log.info("worker %d serving again", worker.index)

    def forward(self, sig: signal.Signals) -> None:
        """Send `sig` to every running worker."""
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    async def _terminate_all(self) -> None:
        self._stopping.set()
        self.forward(signal.SIGTERM)
        deadline = self.loaded.config.server.drain_timeout + KILL_GRACE
        running = [w.process for w in self.workers if w.process is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), deadline)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.warning("worker pid %d did not stop in time; killing it", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in running))

    async def stop(self) -> None:
        """Stop every worker (each drains), then the admin listener."""
        await self._terminate_all()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await self.admin.stop()
        await self._session.close()

    async def reload_admin(self) -> None:
        """On SIGHUP: serve the admin listener where the file now says (workers reload
        themselves)."""
        try:
            loaded = load_config(self.config_path)
        except ConfigError:
            return  # the workers log the problems and keep the old config
        try:
            await self.admin.apply(loaded.config.admin)
        except AdminBindError as exc:
            log.error("%s; the admin listener stays where it was", exc)
            return
        self.loaded = loaded

    # -- admin pages (AdminPages) ----------------------------------------------------------

    async def _scrape(self, worker: Worker, path: str) -> tuple[int, bytes] | None:
        if not worker.serving:
            return None
        url = f"http://127.0.0.1:{worker.admin_port}{path}"
        try:
            response = await self._session.get(url, timeout=SCRAPE_TIMEOUT)
        except HttpClientError:
            return None
        return response.status, response.body

    async def metrics(self) -> bytes:
        scraped = await asyncio.gather(*(self._scrape(w, "/metrics") for w in self.workers))
        pages = [r[1].decode() for r in scraped if r is not None and r[0] == 200]
        own = Gauge("flm_workers", "Worker processes configured (server.workers).", [])
        own.set(len(self.workers))
        serving = Gauge("flm_workers_serving", "Workers whose metrics are in this scrape.", [])
        serving.set(len(pages))
        restarts = Counter(
            "flm_worker_restarts", "Workers restarted after they exited, by worker.", ["worker"]
        )
        for worker in self.workers:
            restarts.labels(str(worker.index)).inc(worker.restarts)
        return merge_expositions(pages).encode() + render([own, serving, restarts])

    async def readiness(self) -> Status:
        scraped = await asyncio.gather(*(self._scrape(w, "/readyz") for w in self.workers))
        workers: list[dict[str, Any]] = []
        for worker, result in zip(self.workers, scraped, strict=True):
            entry: dict[str, Any] = {"worker": worker.index, "ready": False}
            if worker.process is not None and worker.process.returncode is None:
                entry["pid"] = worker.process.pid
            if worker.admin_port is not None:
                entry["admin"] = f"127.0.0.1:{worker.admin_port}"
            if result is not None:
                status, body = result
                entry["ready"] = status == 200
                with contextlib.suppress(ValueError):
                    entry["details"] = json.loads(body)
            workers.append(entry)
        ready = all(entry["ready"] for entry in workers)
        return ready, {"status": "ready" if ready else "not-ready", "workers": workers}

    async def health(self) -> Status:
        serving = sum(worker.serving for worker in self.workers)
        return True, {"status": "ok", "workers": len(self.workers), "workers_serving": serving}


async def ports_taken(loaded: LoadedConfig) -> list[str]:
    """A problem for each listener whose address cannot be bound by a plain socket (no
    SO_REUSEPORT) right now; the socket is closed again at once."""
    problems = []
    for listener in loaded.config.listeners:
        host, port = listener.bind
        try:
            server = await asyncio.start_server(_close, listen_host(host), port)
        except OSError as exc:
            problems.append(f"listener {listener.name!r}: {bind_failure(host, port, exc)}")
            continue
        server.close()
        await server.wait_closed()
    return problems


async def _close(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def _read_line(fd: int) -> bytes:
    """The first line written to `fd` (b"" when the writer closed it first)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"code {code}"


async def supervise(loaded: LoadedConfig, count: int, log_format: str) -> int:
    """Run `count` workers until SIGINT/SIGTERM; the exit code."""
    return await serve_locked(
        loaded.state_dir, loaded.path, lambda: _supervise(loaded, count, log_format)
    )


async def _supervise(loaded: LoadedConfig, count: int, log_format: str) -> int:
    if problems := await ports_taken(loaded):
        for problem in problems:
            log.error("%s", problem)
        return 1
    supervisor = Supervisor(loaded, count, log_format)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await supervisor.admin.apply(loaded.config.admin)
    except AdminBindError as exc:
        # As a single gateway: an explicit admin: must bind, the implicit default need not.
        if "admin" in loaded.config.model_fields_set:
            log.error("%s", exc)
            return 1
        log.warning("%s; metrics are not served", exc)
    if not await supervisor.start():
        await supervisor.stop()
        return 1

    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        supervisor.forward(signal.SIGHUP)
        task = loop.create_task(supervisor.reload_admin())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    with contextlib.suppress(OSError):
        write_pid_file(loaded.state_dir)
    await stop.wait()
    log.info("stopping %d workers", count)
    await supervisor.stop()
    remove_pid_file(loaded.state_dir)
    log.info("stopped")
    return 0


def supervise_forever(loaded: LoadedConfig, count: int, log_format: str = "text") -> int:
    """Entry point of `flm-gateway run` with more than one worker."""
    setup_logging(loaded.config.server.log_level.value, log_format)
    log.info("flm-gateway %s: using %s with %d workers", __version__, loaded.display_name, count)
    for warning in loaded.warnings:
        log.warning("%s", warning.render("warning"))
    return asyncio.run(supervise(loaded, count, log_format))
