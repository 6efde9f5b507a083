"""The state every addon shares for one loaded config: the config, the engines, the listeners.

The gateway builds one `Runtime` per config generation and hands it to the
addons through `apply_config`; a reload builds a new one and swaps it in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mitmproxy import http

from flm_gateway.config import LoadedConfig
from flm_gateway.config.listeners import ListenerConfig
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.listeners import listeners_by_port


@dataclass
class Runtime:
    """One config generation's live state."""

    loaded: LoadedConfig
    directory: EngineDirectory
    listeners: Mapping[int, ListenerConfig] = field(init=False)
    listening: bool = False
    started_at: float = field(default_factory=time.time)
    state_usable: Callable[[], bool] = field(default=lambda: True)
    """Whether the state store answers (security decisions fail closed without it)."""

    def __post_init__(self) -> None:
        self.listeners = listeners_by_port(self.loaded.config.listeners)

    def listener_of(self, flow: http.HTTPFlow) -> ListenerConfig | None:
        """The listener a flow arrived on (by the local port of its client connection)."""
        sockname = flow.client_conn.sockname
        return self.listeners.get(sockname[1]) if sockname else None
