"""The gateway process: an embedded mitmproxy Master with our addons, in our own event loop.

Start: validate (done by the caller), build the engine directory, create the
Master with only the addons we need (no DumpMaster, no mitmdump), set the
options a gateway wants (`connection_strategy=lazy`, `upstream_cert=False`,
`body_size_limit`, HTTP/2 off), hand the runtime to every addon, start the
engine checks (the first one of every engine at once), start serving and
confirm every listener is bound (a listener that cannot bind stops the start
with a clear message).

Stop (SIGINT/SIGTERM): stop accepting new connections, let in-flight requests
and streams finish for up to `server.drain_timeout`, then shut mitmproxy down
and close the listeners (mitmproxy's Master does not close them itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

import aiohttp
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.options import Options

from flm_gateway import __version__, mitm_errors
from flm_gateway.addon_chain import AddonChain
from flm_gateway.addons.egress import Egress
from flm_gateway.addons.inflight import Inflight
from flm_gateway.addons.tls_termination import TlsTermination
from flm_gateway.config import LoadedConfig
from flm_gateway.config.egress import engine_connect_timeout
from flm_gateway.config.engines import EngineConfig
from flm_gateway.config.types import format_host_port
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.listeners import mode_spec
from flm_gateway.logs import setup_logging
from flm_gateway.pipeline import build_addons
from flm_gateway.runtime import Runtime
from flm_gateway.state import StateError
from flm_gateway.state.service import StateService

log = logging.getLogger("flm_gateway")

BIND_WAIT = 10.0


class StartupError(Exception):
    """The gateway could not start (e.g. a listener cannot bind)."""


def default_session(config: EngineConfig) -> aiohttp.ClientSession:
    """The aiohttp session for an engine's health checks and model lists (direct egress)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8, ttl_dns_cache=60))


class Gateway:
    """One running gateway."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.inflight = Inflight()
        # Before mitmproxy's NextLayer and TlsConfig: it decides TLS vs plain per listener and
        # serves the listener's certificate, so TlsConfig never uses mitmproxy's own CA here.
        self.egress = Egress()
        self.tls = TlsTermination(acme_proxy_url=self.egress.service.acme_proxy_url())
        self.state = StateService()
        self.addons: list[Any] = build_addons(self.inflight, self.egress, self.state)
        self.master: Master | None = None
        self.runtime: Runtime | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _build_runtime(self, loaded: LoadedConfig) -> Runtime:
        service = self.egress.service
        directory = EngineDirectory(
            loaded.config.engines,
            service.session_factory,
            service.dialer_factory,
            lambda engine: engine_connect_timeout(loaded.config.egress, engine),
        )
        return Runtime(loaded=loaded, directory=directory)

    def _apply(self, runtime: Runtime) -> None:
        for addon in (self.tls, *self.addons):
            if hasattr(addon, "apply_runtime"):
                addon.apply_runtime(runtime)
            if hasattr(addon, "apply_config"):
                addon.apply_config(runtime.loaded)

    async def start(self) -> None:
        """Start serving; returns once every listener is bound. Raises StartupError."""
        config = self.loaded.config
        mitm_errors.install()
        options = Options(mode=[mode_spec(listener) for listener in config.listeners])
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
            keep_host_header=False,
            validate_inbound_headers=True,
        )
        self.master = master
        self.runtime = self._build_runtime(self.loaded)
        try:
            self._apply(self.runtime)
        except Exception as exc:  # e.g. an unreadable certificate or a world-readable key
            log.debug("applying the config failed", exc_info=True)
            raise StartupError(f"cannot apply the config: {exc}") from None
        # The first check of every engine runs while the listeners come up; requests that
        # arrive before it ends wait for it (`EngineDirectory.settled`).
        self.runtime.directory.start()
        self._task = asyncio.create_task(master.run(), name="mitmproxy")
        await self._wait_bound()
        self.runtime.listening = True
        for listener in config.listeners:
            log.info(
                "listening on %s (%s, %s)",
                format_host_port(listener.bind),
                listener.name,
                listener.tls.mode.value,
            )

    async def _wait_bound(self) -> None:
        assert self.master is not None
        servers = self.master.addons.get("proxyserver").servers
        deadline = asyncio.get_running_loop().time() + BIND_WAIT
        while asyncio.get_running_loop().time() < deadline:
            instances = list(servers)
            failed = [i for i in instances if i.last_exception is not None]
            if failed:
                problems = "; ".join(
                    f"{i.mode.listen_host()}:{i.mode.listen_port()}: {i.last_exception}"
                    for i in failed
                )
                raise StartupError(f"cannot listen: {problems}")
            if instances and all(i.is_running for i in instances) and not servers.is_updating:
                return
            await asyncio.sleep(0.02)
        raise StartupError("listeners did not start within 10 s")

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, shut down."""
        assert self.master is not None
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
        if self.runtime is not None:
            await self.runtime.directory.close()


async def run_gateway(loaded: LoadedConfig) -> int:
    """Serve until SIGINT/SIGTERM; the exit code."""
    gateway = Gateway(loaded)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.request_stop)
    try:
        await gateway.start()
    except (StartupError, StateError) as exc:
        log.error("%s", exc)
        gateway.state.close()
        if gateway.master is not None:
            gateway.master.shutdown()
            await gateway.master.addons.get("proxyserver").servers.update([])
        return 1
    await gateway.wait_stopped()
    log.info("stopping")
    await gateway.stop()
    log.info("stopped")
    return 0


def serve_forever(loaded: LoadedConfig) -> int:
    """Entry point of `flm-gateway run`."""
    setup_logging(loaded.config.server.log_level.value)
    if loaded.path is None:
        log.info(
            "flm-gateway %s: no flm.yaml found, using the built-in default config", __version__
        )
    else:
        log.info("flm-gateway %s: using %s", __version__, loaded.display_name)
    if sys.platform != "win32":
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    return asyncio.run(run_gateway(loaded))
