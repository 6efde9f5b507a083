"""How a listener from flm.yaml becomes a mitmproxy server, and how a flow finds its listener.

Each listener is one mitmproxy reverse-proxy mode, and a flow belongs to the
listener whose socket accepted it (`listener_of`: by the mode mitmproxy tags
the connection with, never by port alone). The reverse target in the
spec is a placeholder that is never dialled: every request is either answered
by an addon or routed to an engine by `addons.routing`, and the `upstream_guard`
addon refuses any server connection to the placeholder (fail closed).

`set_servers` changes the running set (start and reload): mitmproxy keeps the
servers whose spec is unchanged, stops removed ones (open connections live on)
and starts new ones; `wait_servers` waits until exactly the wanted servers run,
and turns mitmproxy's silent bind failures (kept in `last_exception`) into an
error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

from mitmproxy import connection
from mitmproxy.exceptions import OptionsError
from mitmproxy.master import Master
from mitmproxy.proxy.mode_specs import ProxyMode

from flm_gateway.config.binds import listen_host
from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.config.types import format_host_port
from flm_gateway.proxy.port_owner import bind_failure

BIND_WAIT = 10.0


class ListenerError(Exception):
    """Listeners could not be started (a bind failed, or they did not come up in time);
    `ports` are those that failed to bind."""

    def __init__(self, message: str, ports: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.ports = tuple(ports)


PLACEHOLDER_TARGET = ("127.0.0.1", 9)
"""The never-dialled reverse target of every listener (the discard port)."""


def mode_spec(listener: ListenerConfig) -> str:
    """The mitmproxy mode string for a listener, e.g. reverse:http://127.0.0.1:9@127.0.0.1:8088."""
    return spec_for(listener.bind)


def spec_for(bind: tuple[str, int]) -> str:
    """The mode string for a bind. mitmproxy splits the listen address at its last colon and
    hands the host to asyncio as is, so an IPv6 host goes without brackets (`@::1:8088`;
    `[::1]` would be looked up as a name); `[::]` goes without a host, which binds every
    address of both families (see `config.binds`)."""
    target_host, target_port = PLACEHOLDER_TARGET
    host = listen_host(bind[0])
    listen_at = str(bind[1]) if host is None else f"{host}:{bind[1]}"
    return f"reverse:http://{target_host}:{target_port}@{listen_at}"


def listener_index(listeners: Iterable[ListenerConfig]) -> Mapping[str, ListenerConfig]:
    """Listeners keyed by their mode spec. mitmproxy tags each client connection with the
    mode of the server that accepted it (`client_conn.proxy_mode`), so this key is the
    listening socket itself, host and port: exact, whatever local address a wildcard bind
    was reached on, and one dict lookup per flow."""
    return {mode_spec(listener): listener for listener in listeners}


def listener_of(
    index: Mapping[str, ListenerConfig], client: connection.Client
) -> ListenerConfig | None:
    """The listener whose socket accepted `client`; None when a reload removed it."""
    return index.get(client.proxy_mode.full_spec)


async def wait_servers(master: Master, modes: Sequence[str] | None = None) -> None:
    """Return once the servers for `modes` (default: the current ones) all run."""
    servers = master.addons.get("proxyserver").servers
    wanted = {ProxyMode.parse(m) for m in (modes or master.options.mode)}
    deadline = asyncio.get_running_loop().time() + BIND_WAIT
    while asyncio.get_running_loop().time() < deadline:
        instances = list(servers)
        failed = [i for i in instances if i.last_exception is not None]
        if failed:
            raise ListenerError(
                "; ".join(_failure(i.mode, i.last_exception) for i in failed),
                [i.mode.listen_port() or 0 for i in failed],
            )
        if (
            {i.mode for i in instances} == wanted
            and all(i.is_running for i in instances)
            and not servers.is_updating
        ):
            return
        await asyncio.sleep(0.02)
    raise ListenerError(f"listeners did not start within {BIND_WAIT:g} s")


def _failure(mode: ProxyMode, exc: Exception | None) -> str:
    host = mode.listen_host() or "::"  # no host: every address of both families
    port = mode.listen_port() or 0
    if isinstance(exc, OSError):
        return bind_failure(host, port, exc)
    return f"cannot listen on {format_host_port((host, port))}: {exc}"


async def set_servers(master: Master, listeners: Iterable[ListenerConfig]) -> None:
    """Make the running mitmproxy servers match `listeners`. Raises ListenerError."""
    modes = [mode_spec(listener) for listener in listeners]
    if set(modes) == set(master.options.mode):
        return
    try:
        master.options.update(mode=modes)
    except OptionsError as exc:
        raise ListenerError(str(exc)) from None
    await wait_servers(master, modes)
