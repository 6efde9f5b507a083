"""The gateway process: an embedded mitmproxy Master with our addons, in our own event loop.

Start: validate (done by the caller), build the engine directory, create the
Master with only the addons we need (no DumpMaster, no mitmdump), set the
options a gateway wants (`connection_strategy=lazy`, `upstream_cert=False`,
`body_size_limit`, HTTP/2 off), prepare every addon for the runtime (any
problem, from any addon, stops the start with its `FILE:LINE:COL`), open the
state store, commit every addon (a listener whose certificate the disk refused
to make stops the start too), start the engine checks (the first one of
every engine at once), start serving and confirm every listener is bound (a
listener that cannot bind stops the start with a clear message). See
`proxy/addon_contract.py` for prepare and commit.

Once serving, the admin listener (/metrics, /healthz, /readyz) starts, the pid
file is written and the config watcher runs. An `admin:` section the file sets
explicitly must bind or the start fails; the implicit default (127.0.0.1:9090)
only logs a warning when its port is taken.

Reload (`swap`, driven by `reload.Reloader`): a new `Runtime` with a new engine
directory (health carried over for unchanged engines, new ones checked first);
every addon prepares it, and any problem refuses the reload before anything
changed. Then the steps that need sockets: listeners are added or removed with
`options.update(mode=...)` (kept listeners and open connections are untouched)
and the admin listener rebound if it moved; if one fails, the old listeners are
restored and no addon was touched. Only then is every addon committed (commits
cannot fail), so a reload is all or nothing. The old directory stops its
health checks at once and closes its sessions only after the requests in
flight at the swap have finished.

A worker of `server.workers` (see `app.worker_link`) binds its listeners with
SO_REUSEPORT, serves its admin endpoints on a private loopback port, reports
ready to its supervisor and takes no lock and no pid file.

Stop (SIGINT/SIGTERM): stop accepting new connections, let in-flight requests
and streams finish for up to `server.drain_timeout`, then shut mitmproxy down
and close the listeners (mitmproxy's Master does not close them itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.options import Options

from flm_gateway import __version__
from flm_gateway.addons.egress_dispatch import Egress
from flm_gateway.addons.inflight import Inflight
from flm_gateway.addons.tls_termination import TlsTermination
from flm_gateway.app.hot_reload import Reloader, ReloadError, carry_over_health
from flm_gateway.app.operations_audit import AuditSink, StateAudit
from flm_gateway.app.pipeline import build_addons
from flm_gateway.app.process_logs import set_level, setup_logging
from flm_gateway.app.worker_link import ADMIN as WORKER_ADMIN
from flm_gateway.app.worker_link import WorkerLink
from flm_gateway.config import ConfigError, ConfigProblem, LoadedConfig
from flm_gateway.config.egress_settings import engine_connect_timeout
from flm_gateway.config.loader import position_of
from flm_gateway.config.problems import render_path
from flm_gateway.config.types import format_host_port
from flm_gateway.egress.egress_service import EgressService
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.observability.admin_listener import AdminBindError, AdminServer, GatewayPages
from flm_gateway.observability.memory import freeze_startup_objects
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.proxy import mitm_errors, mitm_http1, mitm_reuse_port, mitm_typecheck
from flm_gateway.proxy.addon_chain import AddonChain
from flm_gateway.proxy.addon_contract import Addon, Prepared, commit_all, prepare_all
from flm_gateway.proxy.event_loop import loop_factory
from flm_gateway.proxy.mitm_listeners import ListenerError, mode_spec, set_servers, wait_servers
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.state import StateError
from flm_gateway.state.process import (
    raise_fd_limit,
    remove_pid_file,
    serve_locked,
    write_pid_file,
)
from flm_gateway.state.state_service import StateService
from flm_gateway.tls.certificate_status import served_statuses

log = logging.getLogger("flm_gateway")


class StartupError(Exception):
    """The gateway could not start (e.g. a listener cannot bind)."""


def engine_directory(loaded: LoadedConfig, egress: EgressService) -> EngineDirectory:
    """The engines of `loaded`, reached through their egress (also used by `check`)."""
    return EngineDirectory(
        loaded.config.engines,
        egress.session_factory,
        egress.dialer_factory,
        lambda engine: engine_connect_timeout(loaded.config.egress, engine),
    )


def serving_problems(loaded: LoadedConfig) -> list[ConfigProblem]:
    """Every problem a start would refuse `loaded` for beyond the loader's, in one pass and
    without serving: every addon prepares a runtime of it (no socket bound, no file written;
    the engines are not contacted). For `flm-gateway validate`."""
    gateway = Gateway(loaded)
    try:
        gateway._prepare(gateway._build_runtime(loaded))
    except ConfigError as exc:
        return exc.problems
    return []


class Gateway:
    """One running gateway."""

    def __init__(self, loaded: LoadedConfig, worker: WorkerLink | None = None) -> None:
        self.loaded = loaded
        self.worker = worker
        self.inflight = Inflight()
        # Before mitmproxy's NextLayer and TlsConfig: it decides TLS vs plain per listener and
        # serves the listener's certificate, so TlsConfig never uses mitmproxy's own CA here.
        self.egress = Egress()
        self.tls = TlsTermination(acme_proxy_url=self.egress.service.acme_proxy_url)
        self.state = StateService()
        self.metrics = GatewayMetrics()
        self.addons: list[Addon[Any]] = build_addons(
            self.inflight, self.egress, self.state, self.metrics
        )
        self._master: Master | None = None
        self.runtime: Runtime | None = None
        self.admin = AdminServer(GatewayPages(self.metrics, lambda: self.runtime))
        self.audit: AuditSink = StateAudit(self.state)
        self.reloader = Reloader(self, self.metrics, self.audit)
        self.metrics.runtime_source = lambda: self.runtime
        self.metrics.inflight_source = lambda: self.inflight.count
        # What the listeners serve now (a packaged-ca leaf, not its root): what clients see.
        self.metrics.certificate_source = lambda: served_statuses(self.tls.certificate_status())
        self.metrics.audit_source = self.state.audit_status
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._retired: list[EngineDirectory] = []
        self._retiring: set[asyncio.Task[None]] = set()

    def _build_runtime(self, loaded: LoadedConfig) -> Runtime:
        return Runtime(
            loaded=loaded,
            directory=engine_directory(loaded, self.egress.service),
            state_usable=lambda: self.state.usable,
        )

    def _prepare(self, runtime: Runtime) -> Prepared:
        """Every addon (TLS termination first) prepared for `runtime`; raises ConfigError."""
        return prepare_all([self.tls, *self.addons], runtime)

    @property
    def master(self) -> Master:
        """The mitmproxy Master (set by `start`)."""
        if self._master is None:
            raise RuntimeError("the gateway has not been started")
        return self._master

    @property
    def started(self) -> bool:
        return self._master is not None

    async def start(self) -> None:
        """Start serving; returns once every listener is bound. Raises StartupError."""
        config = self.loaded.config
        # The ACME client's proxy (the egress bridge's default listener) is bound now, before
        # the bridge runs: a listener bound later would not be served. Stable from then on.
        self.egress.service.acme_proxy_url()
        mitm_errors.install()
        mitm_http1.install()
        mitm_typecheck.install()
        if self.worker is not None:
            mitm_reuse_port.install()
        options = Options(mode=[mode_spec(listener) for listener in config.listeners])
        mitm_http1.register(options)
        master = Master(options)
        master.addons.add(
            core.Core(),
            proxyserver.Proxyserver(),
            self.tls,
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
        )
        # One addon for all of ours: mitmproxy's per-addon dispatch costs ~1.4 µs per event.
        master.addons.add(AddonChain(self.addons))
        options.update(
            connection_strategy="lazy",
            upstream_cert=False,
            body_size_limit=str(config.server.body_size_limit),
            http2=False,
            http3=False,
            websocket=False,
            rawtcp=False,
            ssl_insecure=False,
            # The client's Host reaches our addons (`host_check`); `upstream.point_at` sets
            # the engine's own on everything that is forwarded.
            keep_host_header=True,
            validate_inbound_headers=True,
            **mitm_http1.option_values(config.server.limits),
        )
        self._master = master
        self.runtime = self._build_runtime(self.loaded)
        try:
            prepared = self._prepare(self.runtime)
        except ConfigError as exc:  # e.g. an unreadable certificate or a world-readable key
            lines = (f"cannot serve the config: {problem}" for problem in exc.problems)
            raise StartupError("\n".join(lines)) from None
        self.state.open(self.loaded)  # the store is opened once, at start (StateError stops it)
        commit_all(prepared)
        # A certificate the disk refused to make degrades a reload, but stops a start.
        if missing := self.tls.unavailable_problems(self.loaded):
            raise StartupError("\n".join(f"cannot serve the config: {p}" for p in missing))
        # The first check of every engine runs while the listeners come up; requests that
        # arrive before it ends wait for it (`EngineDirectory.settled`).
        self.runtime.directory.start()
        self._task = asyncio.create_task(master.run(), name="mitmproxy")
        try:
            await wait_servers(master)
        except ListenerError as exc:
            raise StartupError(str(exc)) from None
        self.runtime.listening = True
        for listener in config.listeners:
            log.info(
                "listening on %s (%s, %s)",
                format_host_port(listener.bind),
                listener.name,
                listener.tls.mode.value,
            )
        await self._update_admin(self.loaded, starting=True)
        if self.worker is None:
            self._write_pid_file()
        else:
            self.worker.report_ready(self.admin.port)
        self.reloader.start()

    def _write_pid_file(self) -> None:
        try:
            other = write_pid_file(self.loaded.state_dir)
        except OSError as exc:
            log.warning("cannot write the pid file (flm-gateway reload will not find us): %s", exc)
            return
        if other is not None:
            log.warning(
                "another gateway (pid %d) used the state directory %s", other, self.loaded.state_dir
            )

    async def _update_admin(self, loaded: LoadedConfig, *, starting: bool = False) -> None:
        """Bind the admin listener where `loaded` says; an explicit `admin:` must bind.
        A worker's is private and bound once (`admin:` is the supervisor's)."""
        if self.worker is not None:
            if starting:
                try:
                    await self.admin.apply(WORKER_ADMIN)
                except AdminBindError as exc:
                    raise StartupError(str(exc)) from None
            return
        try:
            await self.admin.apply(loaded.config.admin)
        except AdminBindError as exc:
            if "admin" in loaded.config.model_fields_set:
                if starting:
                    raise StartupError(str(exc)) from None
                where = position_of(loaded, ("admin", "bind"))
                raise ReloadError([f"{where}: admin.bind: {exc}"]) from None
            log.warning(
                "%s; metrics are not served (set admin.bind to a free address, or "
                "admin.enabled: false)",
                exc,
            )

    async def _set_listeners(self, loaded: LoadedConfig) -> None:
        try:
            await set_servers(self.master, loaded.config.listeners)
        except ListenerError as exc:
            listeners = loaded.config.listeners
            failed = [i for i, listener in enumerate(listeners) if listener.bind[1] in exc.ports]
            key: tuple[str | int, ...] = ("listeners",)
            if failed:
                key = ("listeners", failed[0], "bind")
            where = position_of(loaded, key)
            raise ReloadError([f"{where}: {render_path(key)}: {exc}"]) from None

    async def swap(self, loaded: LoadedConfig) -> None:
        """Serve `loaded` (validated) without dropping a request; see the module docstring.

        Raises ReloadError when any step fails, before any addon changed (the listeners
        are restored when binding the new ones failed).
        """
        old = self.runtime
        if old is None:
            raise RuntimeError("the gateway has not been started")
        runtime = self._build_runtime(loaded)
        try:
            prepared = self._prepare(runtime)
        except ConfigError as exc:
            await runtime.directory.close()
            raise ReloadError([str(problem) for problem in exc.problems]) from None
        await carry_over_health(runtime.directory, old.directory)
        runtime.listening = old.listening
        try:
            await self._set_listeners(loaded)
            await self._update_admin(loaded)
        except ReloadError:
            with contextlib.suppress(ReloadError):
                await self._set_listeners(old.loaded)
            await runtime.directory.close()
            raise
        commit_all(prepared)
        server = loaded.config.server
        if server.body_size_limit != old.loaded.config.server.body_size_limit:
            self.master.options.update(body_size_limit=str(server.body_size_limit))
        if server.limits != old.loaded.config.server.limits:
            self.master.options.update(**mitm_http1.option_values(server.limits))
        set_level(server.log_level.value)
        self.runtime, self.loaded = runtime, loaded
        runtime.directory.start()
        self._retire(old.directory)

    def _retire(self, directory: EngineDirectory) -> None:
        """Stop `directory`'s checks now; close its sessions once today's requests finish."""
        in_flight = self.inflight.snapshot()
        self._retired.append(directory)

        async def close_when_done() -> None:
            await directory.stop_checks()
            await self.inflight.wait_finished(in_flight)
            await directory.close()
            self._retired.remove(directory)

        task = asyncio.create_task(close_when_done(), name="retire-engine-directory")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, shut down."""
        await self.reloader.stop()
        servers = self.master.addons.get("proxyserver").servers
        await servers.update([])
        if self.runtime is not None:
            self.runtime.listening = False
        drain = self.loaded.config.server.drain_timeout
        if self.inflight.count:
            log.info("draining %d in-flight request(s), up to %gs", self.inflight.count, drain)
            if not await self.inflight.wait_idle(drain):
                log.warning("drain timeout: %d request(s) cut off", self.inflight.count)
        self.master.shutdown()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.admin.stop()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        directories = [*self._retired, *([self.runtime.directory] if self.runtime else [])]
        await asyncio.gather(*(directory.close() for directory in directories))
        if self.worker is None:
            remove_pid_file(self.loaded.state_dir)


async def run_gateway(loaded: LoadedConfig, worker: WorkerLink | None = None) -> int:
    """Serve until SIGINT/SIGTERM (SIGHUP reloads); the exit code. A worker runs under its
    supervisor's lock of the state directory."""
    if worker is not None:
        return await _serve(loaded, worker)
    return await serve_locked(loaded.state_dir, loaded.path, lambda: _serve(loaded))


async def _serve(loaded: LoadedConfig, worker: WorkerLink | None = None) -> int:
    before, after = raise_fd_limit()
    if after != before:
        log.info("open-file limit raised from %d to %d", before, after)
    gateway = Gateway(loaded, worker)
    # Before any connection exists: what is loaded by now (modules, config, addons) leaves
    # the collector's reach, so the memory reclaimer scans only what requests make.
    freeze_startup_objects()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.request_stop)
    try:
        await gateway.start()
    except (StartupError, StateError) as exc:
        log.error("%s", exc)
        await gateway.admin.stop()
        gateway.state.close()
        if gateway.started:
            gateway.master.shutdown()
            await gateway.master.addons.get("proxyserver").servers.update([])
        return 1
    if hasattr(signal, "SIGHUP"):
        loop.add_signal_handler(signal.SIGHUP, gateway.reloader.trigger, "SIGHUP")
    watch = None
    if worker is not None:
        watch = asyncio.create_task(worker.watch_supervisor(gateway.request_stop))
    await gateway.wait_stopped()
    if watch is not None:
        watch.cancel()
    log.info("stopping")
    await gateway.stop()
    log.info("stopped")
    return 0


def serve_forever(
    loaded: LoadedConfig, log_format: str = "text", worker: WorkerLink | None = None
) -> int:
    """Entry point of `flm-gateway run` (and of each worker of a supervisor)."""
    setup_logging(
        loaded.config.server.log_level.value,
        log_format,
        worker.index if worker is not None else None,
    )
    if worker is not None:
        log.info("worker %d (pid %d) starting", worker.index, os.getpid())
        return asyncio.run(run_gateway(loaded, worker))
    if loaded.path is None:
        log.info(
            "flm-gateway %s: no flm.yaml found, using the built-in default config", __version__
        )
    else:
        log.info("flm-gateway %s: using %s", __version__, loaded.display_name)
    for warning in loaded.warnings:
        log.warning("%s", warning.render("warning"))
    if sys.platform != "win32":
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    factory, loop_name = loop_factory()
    log.info("event loop: %s", loop_name)
    return asyncio.run(run_gateway(loaded), loop_factory=factory)
