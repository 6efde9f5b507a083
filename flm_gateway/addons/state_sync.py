"""Keep the shared `StateService` in sync with the config: the state store's lifecycle.

Policy: the gateway opens the store `flm.yaml` names (`state:`) and loads its
keys and blocks before it serves (`Gateway.start`, between preparing and
committing the addons); if that fails, the gateway does not start. `prepare`
refuses a reload that moves the store or changes `state.audit` (that needs a
restart), with the config path; `commit` hands the service what may change
while it runs (refresh timings, block memory). `running` starts the refresh and
write-behind loops; `done` flushes queued writes and closes the store. No flow
hooks: the security addons read the service's view, and fail closed (503)
while `StateService.usable` is False.
"""

from __future__ import annotations

from flm_gateway.config import ConfigError, LoadedConfig
from flm_gateway.config.loader import problem_at
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.state.state_service import StateService


class StateSync:
    def __init__(self, state: StateService) -> None:
        self._state = state

    def prepare(self, runtime: Runtime) -> LoadedConfig:
        loaded = runtime.loaded
        problems = self._state.reopen_problems(loaded)
        if problems:
            raise ConfigError([problem_at(loaded, path, message) for path, message in problems])
        return loaded

    def commit(self, prepared: LoadedConfig) -> None:
        self._state.configure(prepared)

    def running(self) -> None:
        self._state.start()

    async def done(self) -> None:
        await self._state.stop()
