"""Listeners shared by several worker processes: SO_REUSEPORT on every API listener.

With `server.workers` above 1 every worker binds each listener itself with
SO_REUSEPORT, and the kernel spreads new connections over the workers' sockets
(one accept queue per socket, so no thundering herd), as nginx's `reuseport`
and Envoy do. A worker that reloads binds and closes its own sockets, so a
reload needs no socket passing. Linux lets only sockets of the same user join
the group. `install()` replaces `ReverseInstance.listen` (the mode every
listener uses, `mitm_listeners.mode_spec`) with a copy that asks asyncio for
SO_REUSEPORT; a test pins that internal name so an upgrade that moves it fails
loudly. With one worker it is not installed: a port another process holds is
then an error at start, as always.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mitmproxy.proxy.mode_servers import ReverseInstance


async def _listen_reuse_port(self: ReverseInstance, host: str, port: int) -> list[Any]:
    return [await asyncio.start_server(self.handle_stream, host, port, reuse_port=True)]


def install() -> None:
    """Make every reverse-proxy listener bind with SO_REUSEPORT (idempotent)."""
    ReverseInstance.listen = _listen_reuse_port  # type: ignore[assignment,method-assign]
