"""TLS termination per listener: the right certificate, or a refusal.

Matches every client connection on a listener from flm.yaml by the socket that
accepted it (`flm_gateway.proxy.mitm_listeners.listener_of`, never by port alone).
- `next_layer`: a TLS listener takes only TLS, a `local-http` listener only
  plain HTTP; anything else is refused and closed (`tls_layers`). A connection
  on a listener this addon has no committed settings for (bound by a reload
  that has not committed yet) is refused too. Fail closed.
- `tls_start_client`: sets `tls_start.ssl_conn` itself, with the listener's
  minimum version and the certificate its mode's `CertificateSource` hands out
  for the client's SNI, so mitmproxy's TlsConfig (placed after this addon)
  never serves its own CA for our listeners. If the source has nothing to
  serve or fails, the handshake gets a context without a certificate and
  fails: fail closed.
- `responseheaders` / `response`: adds Strict-Transport-Security on TLS
  connections of listeners with `hsts:`.
- `running()` binds the plain-HTTP side servers (ACME HTTP-01, redirects) and
  starts ACME issuance/renewal; `done()` stops both.
Reads no flow.metadata and writes none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import connection, ctx, http, tls
from mitmproxy.addons.tlsconfig import AppData
from mitmproxy.proxy import layer
from mitmproxy.proxy.layers import modes
from OpenSSL import SSL

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.config.loader import LoadedConfig, problem_at
from flm_gateway.config.problems import ConfigError, ConfigProblem
from flm_gateway.config.tls_checks import acme_http_address, redirect_address
from flm_gateway.config.tls_settings import (
    AcmeChallenge,
    AcmeSettings,
    HstsSettings,
    TlsMode,
    TlsVersion,
)
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.mitm_listeners import mode_spec
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.proxy.tls_layers import RefuseLayer, plan_layer
from flm_gateway.tls import build_source, source_problems
from flm_gateway.tls.acme_challenges import HttpSideServer, RedirectTarget
from flm_gateway.tls.context import ContextCache, refusing_context
from flm_gateway.tls.mode import CertificateSource, CertificateStatus, ServedCertificate
from flm_gateway.tls.names import default_names
from flm_gateway.tls.packaged_ca import LocalRoot

logger = logging.getLogger(__name__)

Address = tuple[str, int]


def hsts_header(settings: HstsSettings) -> str:
    value = f"max-age={int(settings.max_age)}"
    if settings.include_subdomains:
        value += "; includeSubDomains"
    if settings.preload:
        value += "; preload"
    return value


@dataclass(frozen=True)
class ListenerTls:
    """Precomputed TLS state of one listener."""

    listener: ListenerConfig
    source: CertificateSource
    min_version: TlsVersion
    hsts: str | None
    state_dir: Path
    config_dir: Path | None


@dataclass(frozen=True)
class TlsState:
    by_spec: Mapping[str, ListenerTls] = field(default_factory=dict)
    side_servers: Mapping[Address, HttpSideServer] = field(default_factory=dict)


class Unavailable:
    """The source of a listener whose certificate could not be loaded: refuses handshakes."""

    serves_tls = True

    def __init__(self, listener: str, mode: str, reason: str) -> None:
        self._listener, self._mode, self.reason = listener, mode, reason

    def certificate_for(self, server_name: str | None) -> ServedCertificate:
        raise LookupError(self.reason)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> CertificateStatus:
        return CertificateStatus(self._listener, self._mode, note=f"unavailable: {self.reason}")


class TlsTermination:
    """Serves each listener's certificate and enforces its TLS mode."""

    def __init__(self, *, acme_proxy_url: Callable[[], str] | None = None) -> None:
        # Asked for when an ACME listener's source is built (commit), so `validate`, which
        # only prepares, binds nothing; the gateway binds it at start (`Gateway.start`).
        self._acme_proxy_url = acme_proxy_url
        self._state = TlsState()
        self._contexts = ContextCache()
        self._refusing = refusing_context()
        self._running = False
        self._sync_lock = asyncio.Lock()
        self._pending: set[asyncio.Task[None]] = set()

    # -- configuration -------------------------------------------------------------------

    def _reusable(self, listener: ListenerConfig, loaded: LoadedConfig) -> ListenerTls | None:
        """The running entry of `listener` when its certificate source can stay as it is."""
        config_dir = loaded.path.resolve().parent if loaded.path is not None else None
        for previous in self._state.by_spec.values():
            if (
                previous.listener.name == listener.name
                and _source_key(previous.listener) == _source_key(listener)
                and previous.state_dir == loaded.state_dir
                and previous.config_dir == config_dir
            ):
                return previous
        return None

    def prepare(self, runtime: Runtime) -> LoadedConfig:
        """Check, reading only, what every new or changed listener's source will load: its
        stored keys and certificates, its `acme.ca_bundle` (refused with their paths)."""
        loaded = runtime.loaded
        problems = [
            problem_at(loaded, ("listeners", index, "tls", *path), message)
            for index, listener in enumerate(loaded.config.listeners)
            if self._reusable(listener, loaded) is None
            for path, message in source_problems(listener, loaded)
        ]
        if problems:
            raise ConfigError(problems)
        return loaded

    def commit(self, prepared: LoadedConfig) -> None:
        """Build every new listener's source (may create keys on disk), then swap at once.

        What `prepare` checked cannot fail here; a source that still cannot be built (the
        disk refusing a new key) is logged, and its listener refuses every handshake.
        """
        loaded = prepared
        old = self._state
        config_dir = loaded.path.resolve().parent if loaded.path is not None else None
        servers, redirects = self._side_servers(loaded, old)
        root: LocalRoot | None = None
        by_spec: dict[str, ListenerTls] = {}
        for listener in loaded.config.listeners:
            previous = self._reusable(listener, loaded)
            if previous is not None:
                source = previous.source
            else:
                acme = listener.tls.acme or AcmeSettings()
                tokens = None
                if _uses_http01(listener):
                    tokens = servers[acme_http_address(listener.bind, acme)].tokens
                try:
                    if listener.tls.mode == TlsMode.PACKAGED_CA and root is None:
                        root = LocalRoot.load_or_create(loaded.state_dir)
                    source = build_source(
                        listener,
                        loaded,
                        root=root,
                        http_tokens=tokens,
                        acme_proxy_url=self._acme_proxy_url() if self._acme_proxy_url else None,
                    )
                except (OSError, ValueError) as exc:
                    logger.error(
                        "listener %s: no certificate (%s); refusing its handshakes",
                        listener.name,
                        exc,
                    )
                    source = Unavailable(listener.name, listener.tls.mode.value, str(exc))
            hsts = listener.tls.hsts
            by_spec[mode_spec(listener)] = ListenerTls(
                listener=listener,
                source=source,
                min_version=listener.tls.min_version,
                hsts=hsts_header(hsts) if hsts is not None and source.serves_tls else None,
                state_dir=loaded.state_dir,
                config_dir=config_dir,
            )
        new = TlsState(by_spec=by_spec, side_servers=servers)
        self._state = new
        for address, server in servers.items():
            server.redirect = redirects.get(address)
        if self._running:
            self._spawn(self._sync(old, new))

    def _side_servers(
        self, loaded: LoadedConfig, old: TlsState
    ) -> tuple[dict[Address, HttpSideServer], dict[Address, RedirectTarget]]:
        """One plain-HTTP server per ACME http-01 / redirect address (reusing running ones),
        and the redirect each answers with (assigned once the new state is in place)."""
        servers: dict[Address, HttpSideServer] = {}
        redirects: dict[Address, RedirectTarget] = {}
        for listener in loaded.config.listeners:
            tls_settings = listener.tls
            if tls_settings.mode == TlsMode.LOCAL_HTTP:
                continue
            acme = tls_settings.acme or AcmeSettings()
            if _uses_http01(listener):
                address = acme_http_address(listener.bind, acme)
                servers[address] = old.side_servers.get(address) or HttpSideServer(address)
            target = redirect_address(listener.bind, tls_settings)
            if target is not None and tls_settings.redirect_http is not None:
                names = tls_settings.domains or default_names(listener)
                redirects[target] = RedirectTarget(
                    listener.bind[1], tuple(names), tls_settings.redirect_http.status
                )
                servers[target] = old.side_servers.get(target) or HttpSideServer(target)
        return servers, redirects

    # -- lifecycle -----------------------------------------------------------------------

    async def running(self) -> None:
        self._running = True
        await self._sync(TlsState(), self._state)

    async def done(self) -> None:
        self._running = False
        for task in list(self._pending):
            task.cancel()
        await self._sync(self._state, TlsState())

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _sync(self, old: TlsState, new: TlsState) -> None:
        """Stop what `new` no longer uses, then start what it adds."""
        async with self._sync_lock:
            new_sources = {id(entry.source) for entry in new.by_spec.values()}
            for entry in old.by_spec.values():
                if id(entry.source) not in new_sources:
                    await entry.source.stop()
            for address, server in old.side_servers.items():
                if new.side_servers.get(address) is not server:
                    await server.stop()
            for address, server in new.side_servers.items():
                if not server.running:
                    try:
                        await server.start()
                    except OSError as exc:
                        logger.error(
                            "cannot listen on %s:%s for ACME http-01 / redirects: %s",
                            *address,
                            exc.strerror or exc,
                        )
            for entry in new.by_spec.values():
                await entry.source.start()

    # -- connection hooks ----------------------------------------------------------------

    def _lookup(self, client: connection.Client) -> ListenerTls | None:
        return self._state.by_spec.get(client.proxy_mode.full_spec)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        if len(context.layers) != 1 or not isinstance(context.layers[0], modes.ReverseProxy):
            return
        entry = self._lookup(context.client)
        if entry is None:
            # A listener without committed TLS settings: bound by a reload that has not
            # committed yet, or removed by one. mitmproxy's own choice would accept plain
            # HTTP on a TLS listener (or TLS with its own CA) for the connection's lifetime.
            nextlayer.layer = RefuseLayer(context, b"", "listener not configured (reload)")
            return
        nextlayer.layer = plan_layer(
            context,
            nextlayer.data_client(),
            serves_tls=entry.source.serves_tls,
            listener=entry.listener.name,
        )

    def tls_start_client(self, tls_start: tls.TlsData) -> None:
        # For our listeners we always decide, even if an addon before us (e.g. mitmproxy's
        # TlsConfig, if misplaced) already prepared a connection with another certificate.
        client = tls_start.context.client
        entry = self._lookup(client)
        if entry is None or tls_start.is_dtls:
            return
        try:
            served = entry.source.certificate_for(client.sni)
            context = self._contexts.get(served, entry.min_version)
        except Exception as exc:
            logger.error(
                "listener %s: no certificate for SNI %r (%s: %s); refusing the handshake",
                entry.listener.name,
                client.sni,
                type(exc).__name__,
                exc,
            )
            context = self._refusing
        ssl_conn = SSL.Connection(context)
        ssl_conn.set_app_data(
            AppData(
                client_alpn=client.alpn,
                server_alpn=tls_start.context.server.alpn,
                http2=_http2_enabled(),
            )
        )
        ssl_conn.set_accept_state()
        tls_start.ssl_conn = ssl_conn

    # -- HSTS ----------------------------------------------------------------------------

    def _add_hsts(self, flow: http.HTTPFlow) -> None:
        if flow.response is None or not flow.client_conn.tls_established:
            return
        entry = self._lookup(flow.client_conn)
        if entry is not None and entry.hsts is not None:
            flow.response.headers["strict-transport-security"] = entry.hsts

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._add_hsts(flow)

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._add_hsts(flow)

    # -- visibility ----------------------------------------------------------------------

    def unavailable_problems(self, loaded: LoadedConfig) -> list[ConfigProblem]:
        """The listeners of `loaded` whose certificate the last commit could not make, at
        their `tls.mode`: a start refuses them (a reload serves on, refusing their handshakes)."""
        by_name = {entry.listener.name: entry.source for entry in self._state.by_spec.values()}
        return [
            problem_at(
                loaded,
                ("listeners", index, "tls", "mode"),
                f"{listener.tls.mode.value}: no certificate: {source.reason}",
            )
            for index, listener in enumerate(loaded.config.listeners)
            if isinstance(source := by_name.get(listener.name), Unavailable)
        ]

    def certificate_status(self) -> list[CertificateStatus]:
        """What every listener serves right now (for check, admin endpoints, metrics)."""
        return [entry.source.status() for entry in self._state.by_spec.values()]

    def certificate_expiry(self) -> dict[str, float]:
        """Listener name -> not_after (Unix time) of the certificate served now."""
        expiry: dict[str, float] = {}
        for status in self.certificate_status():
            if status.not_after is not None:
                expiry[status.listener] = status.not_after.timestamp()
        return expiry

    def source(self, listener_name: str) -> CertificateSource | None:
        for entry in self._state.by_spec.values():
            if entry.listener.name == listener_name:
                return entry.source
        return None


def _source_key(listener: ListenerConfig) -> tuple[object, ...]:
    """What a listener's certificate source depends on (hsts, min_version, redirects do not)."""
    tls_settings = listener.tls
    return (
        listener.name,
        listener.bind,
        tls_settings.mode,
        tuple(tls_settings.hostnames),
        tuple(tls_settings.domains),
        tls_settings.acme,
    )


def _uses_http01(listener: ListenerConfig) -> bool:
    acme = listener.tls.acme or AcmeSettings()
    return listener.tls.mode == TlsMode.HTTPS_ACME and acme.challenge == AcmeChallenge.HTTP_01


def _http2_enabled() -> bool:
    with contextlib.suppress(AttributeError, KeyError):
        return bool(ctx.options.http2)
    return True
