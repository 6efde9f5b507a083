"""engine_concurrency: per-engine cap, FIFO wait queue, 503 when full or too slow."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mitmproxy import http

from flm_gateway.addons.engine_concurrency import EngineConcurrency
from flm_gateway.proxy.flow_meta import CONCURRENCY_ENGINE, ROUTE_ENGINE
from tests.support.flows import configure, error_of, runtime_of
from tests.support.security import flow, loaded


def _routed(config) -> http.HTTPFlow:  # type: ignore[no-untyped-def]
    target = flow(config, "POST", "/v1/chat/completions", body={"model": "tiny-a"})
    ROUTE_ENGINE.set(target, "alpha")
    return target


async def test_cap_queue_and_timeout(tmp_path: Path) -> None:
    config = loaded(
        "resources: {max_concurrent_per_engine: 2, max_queue_per_engine: 1, queue_timeout: 200ms}",
        tmp_path,
    )
    addon = EngineConcurrency()
    configure(config, addon)
    first, second, third, fourth = (_routed(config) for _ in range(4))
    await addon.request(first)
    await addon.request(second)
    assert first.response is None and second.response is None
    waiting = asyncio.create_task(addon.request(third))
    await asyncio.sleep(0.01)
    await addon.request(fourth)  # the queue (1) is full
    status, error = error_of(fourth)
    assert (status, error["code"]) == (503, "engine_busy")
    assert fourth.response is not None and fourth.response.headers["retry-after"]
    addon.response(first)  # frees a slot: the waiter gets it
    await asyncio.wait_for(waiting, 1)
    assert third.response is None and CONCURRENCY_ENGINE.require(third) == "alpha"
    late = _routed(config)
    await addon.request(late)  # waits 200 ms, nobody leaves
    assert error_of(late)[0] == 503
    addon.error(second)
    addon.response(third)
    slots = addon.slots("alpha")
    assert slots is not None and slots.active == 0 and not slots.waiters


async def test_unlimited_by_default_and_per_engine_override(tmp_path: Path) -> None:
    addon = EngineConcurrency()
    configure(loaded("", tmp_path), addon)
    assert addon.slots("alpha") is None
    config = loaded("resources: {engines: {alpha: {max_concurrent: 1, max_queue: 0}}}", tmp_path)
    configure(config, addon)
    one, two = _routed(config), _routed(config)
    await addon.request(one)
    await addon.request(two)
    assert one.response is None and error_of(two)[0] == 503


async def test_the_engine_capacity_is_the_default_cap_and_config_wins(tmp_path: Path) -> None:
    config = loaded("resources: {max_queue_per_engine: 0}", tmp_path)
    runtime = runtime_of(config)
    addon = EngineConcurrency()
    configure(runtime, addon)
    assert addon.slots("alpha") is None  # the engine told no capacity yet: no cap
    runtime.directory.engines["alpha"].capacity = 2  # a health check read total_slots
    flows = [_routed(config) for _ in range(3)]
    for each in flows:
        await addon.request(each)
    assert [f.response is None for f in flows] == [True, True, False]
    assert error_of(flows[2])[0] == 503
    runtime.directory.engines["alpha"].capacity = 3  # the engine restarted with -np 3
    again = _routed(config)
    await addon.request(again)
    assert again.response is None
    explicit = loaded(
        "resources: {max_concurrent_per_engine: 1, max_queue_per_engine: 0}", tmp_path
    )
    explicit_runtime = runtime_of(explicit)
    explicit_runtime.directory.engines["alpha"].capacity = 512
    configure(explicit_runtime, addon)
    slots = addon.slots("alpha")
    assert slots is not None and slots.limit == 1  # config wins over the engine's 512


async def test_waiters_enter_when_the_cap_goes_away(tmp_path: Path) -> None:
    config = loaded("resources: {max_concurrent_per_engine: 1}", tmp_path)
    addon = EngineConcurrency()
    configure(config, addon)
    first, second = _routed(config), _routed(config)
    await addon.request(first)
    waiting = asyncio.create_task(addon.request(second))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    configure(loaded("", tmp_path), addon)  # a reload removed the cap
    await asyncio.wait_for(waiting, 1)
    assert second.response is None and CONCURRENCY_ENGINE.require(second) == "alpha"


async def test_a_lowered_capacity_admits_waiters_only_below_it(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    runtime = runtime_of(config)
    runtime.directory.engines["alpha"].capacity = 3
    addon = EngineConcurrency()
    configure(runtime, addon)
    running = [_routed(config) for _ in range(3)]
    for each in running:
        await addon.request(each)
    runtime.directory.engines["alpha"].capacity = 1  # the engine came back with -np 1
    waiter = _routed(config)
    waiting = asyncio.create_task(addon.request(waiter))
    await asyncio.sleep(0.01)
    addon.response(running[0])
    addon.response(running[1])
    await asyncio.sleep(0.01)
    assert not waiting.done()  # one is still in flight: the engine's one slot is taken
    addon.response(running[2])
    await asyncio.wait_for(waiting, 1)
    assert waiter.response is None and CONCURRENCY_ENGINE.require(waiter) == "alpha"
