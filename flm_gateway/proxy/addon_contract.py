"""The addon contract: how one config generation reaches every addon, in two steps.

Every addon of the pipeline (and the TLS termination addon) is an `Addon`:

- `prepare(runtime) -> P` reads the new `Runtime` (the loaded config, the engine
  directory, the listeners) and computes everything the addon's hooks will read,
  without changing the addon or the world: no socket opened, no file written, no
  state swapped. It may read files the config names and check them. When the
  config cannot be served it raises `ConfigError` whose problems carry the config
  path of the offending value (`problem_at`), so they print as `FILE:LINE:COL`.
- `commit(prepared)` swaps what `prepare` returned into the addon. It cannot fail
  (a step that could, like binding a socket, is done before it or degrades
  fail-closed with a log line).

`prepare_all` prepares every addon and collects the problems of all of them in one
pass; `commit_all` commits. The gateway prepares before it changes anything, so a
reload that any addon refuses leaves every addon on the old config (nothing to
restore), and `flm-gateway validate` runs the same `prepare_all` without serving.
Hooks read only what was committed: nothing re-reads `runtime.loaded.config` per
request. Addons with nothing to configure inherit `Unconfigured`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from flm_gateway.config.loader import problem_at
from flm_gateway.config.problems import ConfigError, ConfigProblem
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.proxy.runtime import Runtime

log = logging.getLogger(__name__)

P = TypeVar("P")


class Addon(Protocol[P]):
    """One addon's side of the configuration contract (its hooks are looked up by name)."""

    def prepare(self, runtime: Runtime) -> P:
        """Everything the hooks need for `runtime`; pure. Raises ConfigError with paths."""
        ...

    def commit(self, prepared: P) -> None:
        """Serve what `prepare` returned from now on; never raises."""
        ...


class Unconfigured:
    """The contract of an addon that reads nothing from the config."""

    def prepare(self, runtime: Runtime) -> None:
        return None

    def commit(self, prepared: None) -> None:
        return None


class ReadsEngines:
    """The contract of an addon whose hooks look engines up: it holds the committed
    generation's engine directory (None until the first commit)."""

    _directory: EngineDirectory | None = None

    def prepare(self, runtime: Runtime) -> EngineDirectory:
        return runtime.directory

    def commit(self, prepared: EngineDirectory) -> None:
        self._directory = prepared


class NotConfigured(RuntimeError):
    """A hook that needs the config ran before any was committed (a start-order bug).

    Raised inside `fail_closed` hooks, so the flow is refused, never served unconfigured.
    """

    def __init__(self, addon: object) -> None:
        super().__init__(f"{type(addon).__name__} has no committed config yet")


@dataclass(frozen=True)
class Prepared:
    """What every addon prepared for one runtime, ready to commit in pipeline order."""

    runtime: Runtime
    steps: tuple[tuple[Addon[Any], Any], ...]


def prepare_all(addons: Sequence[Addon[Any]], runtime: Runtime) -> Prepared:
    """Prepare every addon for `runtime`; raises one ConfigError with every addon's problems.

    An exception other than ConfigError is a bug in the addon, reported (not raised past
    the others) as a problem naming the addon, so it too refuses the config.
    """
    problems: list[ConfigProblem] = []
    steps: list[tuple[Addon[Any], Any]] = []
    for addon in addons:
        try:
            steps.append((addon, addon.prepare(runtime)))
        except ConfigError as exc:
            problems.extend(exc.problems)
        except Exception as exc:
            log.debug("%s.prepare failed", type(addon).__name__, exc_info=True)
            problems.append(
                problem_at(
                    runtime.loaded,
                    (),
                    f"{type(addon).__name__} refused the config: {type(exc).__name__}: {exc}",
                )
            )
    if problems:
        raise ConfigError(problems)
    return Prepared(runtime, tuple(steps))


def commit_all(prepared: Prepared) -> None:
    """Commit every prepared addon, in pipeline order."""
    for addon, value in prepared.steps:
        addon.commit(value)
