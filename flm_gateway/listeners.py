"""How a listener from flm.yaml becomes a mitmproxy server, and how a flow finds its listener.

Each listener is one mitmproxy reverse-proxy mode. The reverse target in the
spec is a placeholder that is never dialled: every request is either answered
by an addon or routed to an engine by `addons.routing`, and the `upstream_guard`
addon refuses any server connection to the placeholder (fail closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flm_gateway.config.listeners import ListenerConfig
from flm_gateway.config.types import format_host_port

PLACEHOLDER_TARGET = ("127.0.0.1", 9)
"""The never-dialled reverse target of every listener (the discard port)."""


def mode_spec(listener: ListenerConfig) -> str:
    """The mitmproxy mode string for a listener, e.g. reverse:http://127.0.0.1:9@127.0.0.1:8088."""
    host, port = PLACEHOLDER_TARGET
    return f"reverse:http://{host}:{port}@{format_host_port(listener.bind)}"


def listeners_by_port(listeners: Iterable[ListenerConfig]) -> Mapping[int, ListenerConfig]:
    """Listeners keyed by bind port, the fastest key a flow offers (its mode's listen port)."""
    return {listener.bind[1]: listener for listener in listeners}
