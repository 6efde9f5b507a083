"""Hot reload of flm.yaml: when it happens, what is checked, what an operator sees.

Triggers: a change of the file (polled every `reload.poll_interval`: size,
mtime, inode, then a content hash, so a `touch` or an unchanged rewrite does
nothing), SIGHUP, and `flm-gateway reload` (which sends SIGHUP). A file change
is acted on once the file has stayed unchanged for `reload.debounce`, so a
burst of edits or an editor's write-then-rename causes one reload. Triggers that
arrive during a reload are merged into one more reload afterwards.

Every reload validates the whole file first (the same loader as `validate`).
An invalid file, a change that needs a restart (`server.state_dir`, `server.workers`) or a swap
that fails (an addon refusing the config, a listener that cannot bind) leaves
the old config serving: every problem is logged with its `file:line:col`, the
audit event `config.reload.failed` goes to the audit log (`config.reload.ok`
on success) and `flm_config_reloads_total{result="failed"}` counts it. The watcher does not
retry the same broken content; the next edit or SIGHUP does. A valid file is
swapped in by `Gateway.swap` (see `gateway.py`): no request in flight is
dropped. Each outcome is also written to `state_dir/last-reload.json` for
`flm-gateway reload` to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from flm_gateway.app.operations_audit import AuditSink
from flm_gateway.config import ConfigError, LoadedConfig, load_config
from flm_gateway.config.loader import position_of
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.state.process import write_reload_status

log = logging.getLogger("flm_gateway.reload")


class ReloadError(Exception):
    """A valid config could not be swapped in; the old one still serves."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class ReloadTarget(Protocol):
    """What the reloader needs of the gateway."""

    @property
    def loaded(self) -> LoadedConfig: ...

    async def swap(self, loaded: LoadedConfig) -> None:
        """Serve `loaded` (already validated); raise ReloadError after rolling back."""
        ...


def restart_required(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """Changes a reload cannot apply while serving, each with its FILE:LINE:COL in `new`."""
    problems = []
    if old.state_dir != new.state_dir:
        problems.append(
            f"{position_of(new, ('server', 'state_dir'))}: server.state_dir: the state "
            f"directory cannot change while serving (serving from {old.state_dir}, the file "
            f"now says {new.state_dir}); restart the gateway to use the new one"
        )
    if old.config.server.workers != new.config.server.workers:
        problems.append(
            f"{position_of(new, ('server', 'workers'))}: server.workers: the number of "
            f"worker processes cannot change while serving (serving with "
            f"{old.config.server.workers!r}, the file now says {new.config.server.workers!r}); "
            "restart the gateway to use it"
        )
    return problems


async def carry_over_health(new: EngineDirectory, old: EngineDirectory) -> None:
    """Give `new` the known health of engines whose config did not change; check the others.

    So a reload does not make every engine look down (and `/readyz` fail) until
    the next health check; engines that are new or changed are checked before
    the swap.
    """
    fresh = []
    for name, state in new.engines.items():
        before = old.engines.get(name)
        if before is not None and before.config == state.config:
            state.state, state.detail = before.state, before.detail
            state.models = dict(before.models)
            state.checked_at, state.models_at = before.checked_at, before.models_at
            state.last_connect_ok = before.last_connect_ok
        else:
            fresh.append(state)
    await asyncio.gather(*(new.check(state) for state in fresh))


@dataclass(frozen=True)
class FileStamp:
    """What the watcher compares between polls."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ReloadOutcome:
    """The result of one reload attempt."""

    ok: bool
    trigger: str
    generation: int
    problems: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "trigger": self.trigger,
            "generation": self.generation,
            "problems": self.problems,
            "at": self.at,
            "pid": os.getpid(),
        }


class Reloader:
    """Runs reloads for one gateway: one at a time, from any trigger."""

    def __init__(
        self,
        target: ReloadTarget,
        metrics: GatewayMetrics,
        audit: AuditSink,
    ) -> None:
        self._target = target
        self._metrics = metrics
        self._audit = audit
        self._lock = asyncio.Lock()
        self._wanted: str | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.generation = 1
        self.last: ReloadOutcome | None = None
        self._served_digest = digest(target.loaded.source.encode())
        self._attempted_digest = self._served_digest

    # --- triggers ---

    def trigger(self, reason: str) -> None:
        """Ask for a reload soon (safe from a signal handler); bursts merge into one."""
        self._wanted = reason
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain(), name="config-reload"
            )

    async def _drain(self) -> None:
        while self._wanted is not None:
            reason, self._wanted = self._wanted, None
            await self.reload(reason)

    def start(self) -> None:
        """Start watching the file when the config asks for it and there is a file."""
        loaded = self._target.loaded
        if loaded.path is None or not loaded.config.reload.watch or self._watcher is not None:
            return
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(loaded.path), name="config-watch"
        )

    async def stop(self) -> None:
        for task in (self._watcher, self._drainer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._watcher = self._drainer = None

    async def _watch(self, path: Path) -> None:
        last = FileStamp.of(path)
        changed_at: float | None = None
        while True:
            settings = self._target.loaded.config.reload
            await asyncio.sleep(settings.poll_interval)
            if not self._target.loaded.config.reload.watch:
                continue
            try:
                stamp = FileStamp.of(path)
                now = time.monotonic()
                if stamp != last:
                    last, changed_at = stamp, now
                    continue
                if changed_at is None or stamp is None or now - changed_at < settings.debounce:
                    continue
                changed_at = None
                data = await asyncio.to_thread(path.read_bytes)
                content = digest(data)
                if content in (self._served_digest, self._attempted_digest):
                    continue
                self._attempted_digest = content
                await self.reload("file change")
            except Exception:  # the watcher must outlive any single failure
                log.exception("config watcher failed; it keeps watching")

    # --- the reload itself ---

    async def reload(self, trigger: str) -> ReloadOutcome:
        """Validate the file and swap it in, or keep the old config; never raises."""
        async with self._lock:
            outcome = await self._reload(trigger)
            self.last = outcome
            self._report(outcome)
            return outcome

    async def _reload(self, trigger: str) -> ReloadOutcome:
        current = self._target.loaded
        if current.path is None:
            return ReloadOutcome(
                False,
                trigger,
                self.generation,
                ["the built-in default config is in use; there is no flm.yaml to reload"],
            )
        log.info("reloading %s (%s)", current.display_name, trigger)
        try:
            new = load_config(current.path)
        except ConfigError as exc:
            return ReloadOutcome(False, trigger, self.generation, [str(p) for p in exc.problems])
        self._attempted_digest = digest(new.source.encode())
        for warning in new.warnings:
            log.warning("%s", warning.render("warning"))
        problems = restart_required(current, new)
        if problems:
            return ReloadOutcome(False, trigger, self.generation, problems)
        try:
            await self._target.swap(new)
        except ReloadError as exc:
            return ReloadOutcome(False, trigger, self.generation, exc.problems)
        except Exception as exc:  # a bug in a swap step: report it, the old config serves
            log.exception("reload failed unexpectedly")
            return ReloadOutcome(False, trigger, self.generation, [f"internal error: {exc}"])
        self.generation += 1
        self._served_digest = digest(new.source.encode())
        self.start()  # `reload.watch` may have just been turned on
        return ReloadOutcome(True, trigger, self.generation)

    def _report(self, outcome: ReloadOutcome) -> None:
        loaded = self._target.loaded
        self._metrics.record_reload(outcome.ok)
        details = {"file": loaded.display_name, "trigger": outcome.trigger}
        if outcome.ok:
            log.info(
                "reloaded %s: now serving config generation %d",
                loaded.display_name,
                outcome.generation,
            )
            self._audit.record("config.reload", "ok", details)
        else:
            log.error(
                "reload of %s failed (%d problem(s)); still serving generation %d",
                loaded.display_name,
                len(outcome.problems),
                outcome.generation,
            )
            for problem in outcome.problems:
                log.error("%s", problem)
            details["problems"] = str(len(outcome.problems))
            details["first_problem"] = outcome.problems[0] if outcome.problems else ""
            self._audit.record("config.reload", "failed", details)
        try:
            write_reload_status(loaded.state_dir, outcome.as_dict())
        except OSError as exc:
            log.warning("cannot write the reload status file: %s", exc)
