"""Keep the shared `StateService` open and in sync: the state store's lifecycle.

Policy: on the first `apply_config` the store `flm.yaml` names (`state:`) is
opened and its keys and blocks loaded, before the gateway serves; if that
fails, the gateway does not start. A reload that moves the store is refused
(rolled back): moving state needs a restart. `running` starts the refresh and
write-behind loops; `done` flushes queued writes and closes the store. No flow
hooks: the security addons read the service's view, and fail closed (503)
while `StateService.usable` is False.
"""

from __future__ import annotations

from flm_gateway.config import LoadedConfig
from flm_gateway.state.state_service import StateService


class StateSync:
    def __init__(self, state: StateService) -> None:
        self._state = state

    def apply_config(self, loaded: LoadedConfig) -> None:
        self._state.open(loaded)
        self._state.block_memory = loaded.config.security.auto_block.remember

    def running(self) -> None:
        self._state.start()

    async def done(self) -> None:
        await self._state.stop()
