"""How a listener from flm.yaml becomes a mitmproxy server, and how a flow finds its listener.

Each listener is one mitmproxy reverse-proxy mode. The reverse target in the
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

from mitmproxy.exceptions import OptionsError
from mitmproxy.master import Master
from mitmproxy.proxy.mode_specs import ProxyMode

from flm_gateway.config.listeners import ListenerConfig
from flm_gateway.config.types import format_host_port

BIND_WAIT = 10.0


class ListenerError(Exception):
    """Listeners could not be started (a bind failed, or they did not come up in time)."""


PLACEHOLDER_TARGET = ("127.0.0.1", 9)
"""The never-dialled reverse target of every listener (the discard port)."""


def mode_spec(listener: ListenerConfig) -> str:
    """The mitmproxy mode string for a listener, e.g. reverse:http://127.0.0.1:9@127.0.0.1:8088."""
    host, port = PLACEHOLDER_TARGET
    return f"reverse:http://{host}:{port}@{format_host_port(listener.bind)}"


def listeners_by_port(listeners: Iterable[ListenerConfig]) -> Mapping[int, ListenerConfig]:
    """Listeners keyed by bind port, the fastest key a flow offers (its mode's listen port)."""
    return {listener.bind[1]: listener for listener in listeners}


async def wait_servers(master: Master, modes: Sequence[str] | None = None) -> None:
    """Return once the servers for `modes` (default: the current ones) all run."""
    servers = master.addons.get("proxyserver").servers
    wanted = {ProxyMode.parse(m) for m in (modes or master.options.mode)}
    deadline = asyncio.get_running_loop().time() + BIND_WAIT
    while asyncio.get_running_loop().time() < deadline:
        instances = list(servers)
        failed = [i for i in instances if i.last_exception is not None]
        if failed:
            problems = "; ".join(
                f"{i.mode.listen_host()}:{i.mode.listen_port()}: {i.last_exception}" for i in failed
            )
            raise ListenerError(f"cannot listen: {problems}")
        if (
            {i.mode for i in instances} == wanted
            and all(i.is_running for i in instances)
            and not servers.is_updating
        ):
            return
        await asyncio.sleep(0.02)
    raise ListenerError(f"listeners did not start within {BIND_WAIT:g} s")


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
