"""The engine directory: three health states, routing order, recovery, model refresh policy.

Engines answer through `ScriptedClient` (no sockets)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from flm_gateway.config.engine_settings import EngineConfig, EngineKind, HealthCheckSettings
from flm_gateway.egress.sessions import direct_session
from flm_gateway.engines import directory as directory_module
from flm_gateway.engines.adapter import HealthState, Reply
from flm_gateway.engines.directory import EngineDirectory
from tests.engines.scripted import REFUSED, ScriptedClient

LLAMA_OK = {
    "/health": Reply(200, {"status": "ok"}),
    "/v1/models": Reply(200, {"data": [{"id": "tiny", "meta": {"n_ctx": 512}}]}),
}
LOADING = Reply(503, {"error": {"code": 503, "message": "Loading model"}})


def engine(name: str, **health: float) -> EngineConfig:
    return EngineConfig(
        name=name,
        kind=EngineKind.LLAMACPP,
        url="http://127.0.0.1:9",
        health=HealthCheckSettings(**health),  # type: ignore[arg-type]
    )


@pytest.fixture
async def directory() -> AsyncIterator[EngineDirectory]:
    configs = [engine("a", interval=0.2), engine("b", interval=0.2), engine("c", interval=0.2)]
    built = EngineDirectory(configs, lambda config: direct_session())
    for state in built.engines.values():
        state.client = ScriptedClient(dict(LLAMA_OK))  # type: ignore[assignment]
    yield built
    await built.close()


def script(directory: EngineDirectory, name: str) -> ScriptedClient:
    client = directory.get(name).client
    assert isinstance(client, ScriptedClient)
    return client


async def test_states_and_routing_order(directory: EngineDirectory) -> None:
    script(directory, "b").table["/health"] = LOADING
    script(directory, "c").table["/health"] = REFUSED
    await directory.check_all()
    states = {name: s.state for name, s in directory.engines.items()}
    assert states == {
        "a": HealthState.HEALTHY,
        "b": HealthState.DEGRADED,
        "c": HealthState.UNREACHABLE,
    }
    assert directory.get("b").detail == "Loading model"
    assert [s.name for s in directory.ordered(["c", "b", "a"], "k")] == ["a", "b", "c"]
    # /v1/models lists reachable engines only (degraded included: it answers)
    assert [(model, s.name) for model, s in directory.models()] == [("tiny", "a")]
    assert directory.any_healthy()


async def test_the_first_check_is_logged_even_when_the_engine_is_down(
    directory: EngineDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    script(directory, "b").table["/health"] = LOADING
    script(directory, "c").table["/health"] = REFUSED
    with caplog.at_level(logging.INFO, logger="flm_gateway.engines"):
        await directory.check_all()
        await directory.check_all()  # nothing changed: nothing more is logged
    logged = {(r.levelname, r.getMessage()) for r in caplog.records}
    assert logged == {
        ("INFO", "engine a is running-healthy: ok (at http://127.0.0.1:9)"),
        ("WARNING", "engine b is running-degraded: Loading model (at http://127.0.0.1:9)"),
        (
            "WARNING",
            "engine c is unreachable: GET failed: cannot connect (Connection refused)"
            " (at http://127.0.0.1:9)",
        ),
    }
    assert len(caplog.records) == 3


async def test_the_capacity_follows_the_health_checks_and_is_logged(
    directory: EngineDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    a = script(directory, "a")
    a.table["/props"] = Reply(200, {"build_info": "b1", "total_slots": 4})
    state = directory.get("a")
    with caplog.at_level(logging.INFO, logger="flm_gateway.engines"):
        await directory.check(state)
        await directory.check(state)  # unchanged: logged once
        assert state.capacity == 4
        a.table["/props"] = Reply(200, {"build_info": "b1", "total_slots": 8})  # a restart
        await directory.check(state)
        assert state.capacity == 8
        a.table["/health"] = REFUSED
        await directory.check(state)  # down: the last known capacity stays
        assert state.capacity == 8
    said = [r.getMessage() for r in caplog.records if "capacity" in r.getMessage()]
    assert said == [
        "engine a reports a capacity of 4 requests at once: its default concurrency cap "
        "(unless security.resources sets one)",
        "engine a reports a capacity of 8 requests at once: its default concurrency cap "
        "(unless security.resources sets one)",
    ]


async def test_round_robin_among_healthy_only(directory: EngineDirectory) -> None:
    script(directory, "c").table["/health"] = LOADING
    await directory.check_all()
    picks = [directory.ordered(["a", "b", "c"], "m")[0].name for _ in range(4)]
    assert sorted(picks) == ["a", "a", "b", "b"]
    assert all(directory.ordered(["a", "b", "c"], "m")[-1].name == "c" for _ in range(3))


async def test_engine_coming_back_is_seen_by_the_periodic_check(
    directory: EngineDirectory,
) -> None:
    script(directory, "a").table["/health"] = REFUSED
    directory.start()
    await directory.settled(5)
    assert directory.get("a").state is HealthState.UNREACHABLE
    script(directory, "a").table["/health"] = Reply(200, {"status": "ok"})
    for _ in range(40):  # down engines are checked every max(0.25 s, interval / 4)
        await asyncio.sleep(0.05)
        if directory.get("a").healthy:
            break
    assert directory.get("a").healthy
    assert "tiny" in directory.get("a").models


async def test_nudge_and_successful_connect_wake_the_checker(
    directory: EngineDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(directory_module, "DOWN_CHECK_FLOOR", 30.0)
    for name in ("a", "b", "c"):
        directory.get(name).config = engine(name, interval=60)
    script(directory, "a").table["/health"] = REFUSED
    directory.start()
    await directory.settled(5)
    state = directory.get("a")
    assert not state.healthy
    script(directory, "a").table["/health"] = Reply(200, {"status": "ok"})
    state.checked_at -= 1  # past NUDGE_GAP
    directory.nudge(state)
    for _ in range(40):
        await asyncio.sleep(0.02)
        if state.healthy:
            break
    assert state.healthy
    state.mark_down("connect failed")
    state.mark_connect_ok()
    await asyncio.sleep(0.1)
    assert state.healthy


async def test_nudge_is_rate_limited(directory: EngineDirectory) -> None:
    state = directory.get("a")
    state.mark_down("x")
    state.checked_at = directory_module.time.monotonic()
    directory.nudge(state)
    assert not state.wake.is_set()
    state.checked_at -= directory_module.NUDGE_GAP
    directory.nudge(state)
    assert state.wake.is_set()


async def test_model_list_is_fetched_on_its_own_schedule(directory: EngineDirectory) -> None:
    state = directory.get("a")
    state.config = engine("a", interval=1, models_refresh=60)
    client = script(directory, "a")
    await directory.check(state)
    await directory.check(state)
    assert client.paths.count("/v1/models") == 1  # fresh list kept
    await directory.check(state, refresh_models=True)
    assert client.paths.count("/v1/models") == 2
    client.table["/health"] = REFUSED
    await directory.check(state)
    client.table["/health"] = Reply(200, {"status": "ok"})
    await directory.check(state)
    assert client.paths.count("/v1/models") == 3  # refetched when it came back


async def test_refresh_on_miss_is_rate_limited(directory: EngineDirectory) -> None:
    first = directory.refresh_on_miss()
    assert first is not None
    await first
    assert directory.refresh_on_miss() is None  # within MISS_REFRESH_GAP
    assert script(directory, "a").paths.count("/v1/models") == 1


async def test_aliases_route_by_discovery(directory: EngineDirectory) -> None:
    state = directory.get("a")
    state.adapter = directory_module.adapter_for(EngineKind.OLLAMA)
    state.client = ScriptedClient(  # type: ignore[assignment]
        {
            "/api/version": Reply(200, {"version": "0.5.7"}),
            "/api/tags": Reply(200, {"models": [{"name": "llama3.2:latest"}]}),
        }
    )
    await directory.check(state)
    assert directory.serving("llama3.2") == ["a"]
    assert directory.serving("llama3.2:latest") == ["a"]
    assert [m for m, _ in directory.models() if m.startswith("llama")] == ["llama3.2:latest"]


async def test_degraded_when_model_list_is_empty_unless_declared(
    directory: EngineDirectory,
) -> None:
    state = directory.get("a")
    script(directory, "a").table["/v1/models"] = Reply(200, {"data": []})
    await directory.check(state)
    assert (state.state, state.detail) == (HealthState.DEGRADED, "the engine lists no model")
    state.config = EngineConfig(name="a", kind=EngineKind.LLAMACPP, url="http://x", models=["m"])
    await directory.check(state, refresh_models=True)
    assert state.healthy and state.serves("m")


async def test_passive_health_rests_an_engine_then_a_check_lets_it_back() -> None:
    """max_fails failures in a row make an engine rest for fail_timeout: routing tries it
    last, while its health state (readiness, /v1/models) stays what the checks say; a check
    during the rest does not end it; the check after fail_timeout (the half-open probe)
    does."""
    configs = [engine("a", interval=30, max_fails=2, fail_timeout=0.3), engine("b", interval=30)]
    directory = EngineDirectory(configs, lambda config: direct_session())
    for state in directory.engines.values():
        state.client = ScriptedClient(dict(LLAMA_OK))  # type: ignore[assignment]
    directory.start()
    try:
        await directory.settled(2)
        a = directory.get("a")
        a.record_failure("5xx")
        assert not a.resting  # one failure is not enough
        a.record_success(0.01)
        a.record_failure("5xx")
        a.record_failure("connect")
        assert a.resting and a.tier == 2 and a.healthy  # out of the rotation, still up
        assert [s.name for s in directory.ordered(["a", "b"], "m")] == ["b", "a"]
        await directory.check(a)
        assert a.resting  # a check during the rest changes nothing
        for _ in range(40):
            await asyncio.sleep(0.05)
            if not a.resting:
                break
        assert not a.resting and a.tier == 0
        firsts = {directory.ordered(["a", "b"], "m")[0].name for _ in range(2)}
        assert firsts == {"a", "b"}  # back in the round robin
    finally:
        await directory.close()


async def test_max_fails_zero_never_rests() -> None:
    directory = EngineDirectory([engine("a", max_fails=0)], lambda config: direct_session())
    try:
        a = directory.get("a")
        for _ in range(10):
            a.record_failure("5xx")
        assert not a.resting
    finally:
        await directory.close()
