"""The addon contract: prepare every addon, collect every problem, commit only when none."""

from __future__ import annotations

import pytest

from flm_gateway.addons.inflight import Inflight
from flm_gateway.app.pipeline import build_addons
from flm_gateway.config import ConfigError
from flm_gateway.config.loader import problem_at
from flm_gateway.proxy.addon_contract import Unconfigured, commit_all, prepare_all
from flm_gateway.proxy.runtime import Runtime
from tests.support.flows import RuntimeFactory


class Recorder:
    """Prepares the listener names; remembers what it was committed."""

    def __init__(self) -> None:
        self.committed: list[tuple[str, ...]] = []

    def prepare(self, runtime: Runtime) -> tuple[str, ...]:
        return tuple(listener.name for listener in runtime.loaded.config.listeners)

    def commit(self, prepared: tuple[str, ...]) -> None:
        self.committed.append(prepared)


class Refuser(Unconfigured):
    """Refuses the second listener's bind, with its path."""

    def prepare(self, runtime: Runtime) -> None:
        raise ConfigError([problem_at(runtime.loaded, ("listeners", 1, "bind"), "refused")])


class Broken(Unconfigured):
    def prepare(self, runtime: Runtime) -> None:
        raise KeyError("a bug")


def test_every_problem_of_every_addon_is_collected_and_nothing_commits(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime()
    recorder = Recorder()
    with pytest.raises(ConfigError) as refused:
        prepare_all([recorder, Refuser(), Broken()], runtime)
    assert [str(problem) for problem in refused.value.problems] == [
        "<built-in default>:1:1: Broken refused the config: KeyError: 'a bug'",
        "<built-in default>:3:26: listeners[1].bind: refused",
    ]
    assert recorder.committed == []


def test_commit_all_commits_what_was_prepared_in_order(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    first, second = Recorder(), Recorder()
    prepared = prepare_all([first, second], runtime)
    assert first.committed == second.committed == []  # preparing changes nothing
    commit_all(prepared)
    assert first.committed == second.committed == [("main", "dropin")]


def test_the_whole_pipeline_prepares_the_test_config(make_runtime: RuntimeFactory) -> None:
    """Every addon of the pipeline is an Addon and accepts a valid config."""
    addons = build_addons(Inflight())
    prepared = prepare_all(addons, make_runtime())
    assert [addon for addon, _ in prepared.steps] == addons
