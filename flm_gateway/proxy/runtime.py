"""The state every addon shares for one loaded config: the config, the engines, the listeners.

The gateway builds one `Runtime` per config generation and hands it to the
addons through `prepare` (see `addon_contract`); a reload builds a new one and swaps it in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mitmproxy import http

from flm_gateway.config import LoadedConfig
from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.proxy.mitm_listeners import listener_index, listener_of


@dataclass
class Runtime:
    """One config generation's live state."""

    loaded: LoadedConfig
    directory: EngineDirectory
    listeners: Mapping[str, ListenerConfig] = field(init=False)
    """Listeners by mode spec (`listeners.listener_index`)."""
    listening: bool = False
    started_at: float = field(default_factory=time.time)
    state_usable: Callable[[], bool] = field(default=lambda: True)
    """Whether the state store answers (security decisions fail closed without it)."""

    def __post_init__(self) -> None:
        self.listeners = listener_index(self.loaded.config.listeners)

    def listener_of(self, flow: http.HTTPFlow) -> ListenerConfig | None:
        """The listener whose socket (host and port) accepted the flow's connection."""
        return listener_of(self.listeners, flow.client_conn)
