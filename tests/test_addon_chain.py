"""`AddonChain` calls our addons' hooks as mitmproxy would: same order, same semantics."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.master import Master
from mitmproxy.options import Options
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHeadersHook
from mitmproxy.test import tflow

from flm_gateway.addons.inflight import Inflight
from flm_gateway.app.pipeline import build_addons
from flm_gateway.proxy.addon_chain import AddonChain, hook_names


class Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name_ = name
        self.calls = calls

    def request(self, flow: object) -> None:
        self.calls.append(f"{self.name_}.request")


class AsyncRecorder(Recorder):
    async def request(self, flow: object) -> None:
        await asyncio.sleep(0)
        self.calls.append(f"{self.name_}.request(async)")


class Failing(Recorder):
    def request(self, flow: object) -> None:
        raise RuntimeError("boom")


class Halting(Recorder):
    def request(self, flow: object) -> None:
        raise exceptions.AddonHalt()


class Deferring(Recorder):
    """A sync hook with async work for this flow: returns an awaitable."""

    def __init__(self, name: str, calls: list[str], fail: bool = False) -> None:
        super().__init__(name, calls)
        self.fail = fail

    def request(self, flow: object) -> object:
        async def later() -> None:
            await asyncio.sleep(0)
            if self.fail:
                raise RuntimeError("late boom")
            self.calls.append(f"{self.name_}.request(deferred)")

        return later()


class Loading:
    def __init__(self) -> None:
        self.loaded = False

    def load(self, loader: object) -> None:
        self.loaded = True


async def trigger(addons: list[object], event: hooks.Hook) -> None:
    master = Master(Options())
    master.addons.add(AddonChain(addons))
    await master.addons.handle_lifecycle(event)


async def test_hooks_run_in_order_and_async_ones_are_awaited() -> None:
    calls: list[str] = []
    addons = [Recorder("a", calls), AsyncRecorder("b", calls), Recorder("c", calls)]
    await trigger(addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["a.request", "b.request(async)", "c.request"]


async def test_an_awaitable_from_a_sync_hook_is_awaited_before_the_next_addon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    addons = [Recorder("a", calls), Deferring("b", calls), Recorder("c", calls)]
    chain = AddonChain(addons)
    assert not asyncio.iscoroutinefunction(chain.request)  # all sync: a sync dispatch
    await trigger(addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["a.request", "b.request(deferred)", "c.request"]
    calls.clear()
    addons = [Deferring("x", calls, fail=True), Deferring("y", calls), Recorder("z", calls)]
    with caplog.at_level(logging.ERROR, "flm_gateway.addons"):
        await trigger(addons, HttpRequestHook(tflow.tflow()))
    assert calls == ["y.request(deferred)", "z.request"]
    assert "Deferring.request: late boom" in caplog.text


async def test_an_exception_is_logged_and_the_next_addon_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    with caplog.at_level(logging.ERROR, "flm_gateway.addons"):
        await trigger([Failing("x", calls), Recorder("y", calls)], HttpRequestHook(tflow.tflow()))
    assert calls == ["y.request"]
    assert "Failing.request: boom" in caplog.text


async def test_addon_halt_stops_the_event() -> None:
    calls: list[str] = []
    await trigger([Halting("h", calls), Recorder("z", calls)], HttpRequestHook(tflow.tflow()))
    assert calls == []


async def test_only_hooks_some_addon_defines_are_exposed() -> None:
    chain = AddonChain([Recorder("a", [])])
    assert callable(getattr(chain, "request", None))
    assert getattr(chain, "response", None) is None
    assert getattr(chain, "update", None) is None
    calls: list[str] = []
    await trigger([Recorder("a", calls)], HttpResponseHeadersHook(tflow.tflow()))
    assert calls == []


async def test_sync_hooks_stay_sync_so_mitmproxy_can_load_them() -> None:
    loading = Loading()
    Master(Options()).addons.add(AddonChain([loading]))
    assert loading.loaded


def test_every_hook_of_the_pipeline_is_dispatched_in_pipeline_order() -> None:
    addons = build_addons(Inflight())
    chain = AddonChain(addons)
    for addon in addons:
        for name in hook_names(addon):
            assert callable(getattr(chain, name))
    assert hook_names(chain) == sorted(
        {name for addon in addons for name in hook_names(addon)},
        key=list(hooks.all_hooks).index,
    )


def test_nested_addons_are_refused() -> None:
    class Parent:
        addons: list[object] = []

    with pytest.raises(ValueError, match="sub-addons"):
        AddonChain([Parent()])
