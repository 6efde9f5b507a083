"""The serving event loop (flm_gateway/proxy/event_loop.py)."""

from __future__ import annotations

import asyncio
import importlib.util

from flm_gateway.proxy.event_loop import WithoutEagerTasks, loop_factory


class _Loop(WithoutEagerTasks, asyncio.SelectorEventLoop):
    pass


def test_the_eager_factory_is_kept_out_and_tasks_still_run() -> None:
    loop = _Loop()
    try:
        loop.set_task_factory(asyncio.eager_task_factory)
        assert loop.get_task_factory() is None
        ran: list[str] = []

        async def work() -> None:
            ran.append("work")

        async def main() -> None:
            task = asyncio.create_task(work())
            assert ran == []  # not started eagerly
            await task

        loop.run_until_complete(main())
        assert ran == ["work"]
    finally:
        loop.close()


def test_any_other_factory_is_installed_as_asked() -> None:
    loop = _Loop()
    try:

        def factory(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> object:
            return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

        loop.set_task_factory(factory)
        assert loop.get_task_factory() is factory
    finally:
        loop.close()


def test_uvloop_when_installed_else_asyncio() -> None:
    factory, name = loop_factory()
    if importlib.util.find_spec("uvloop") is None:
        assert (factory, name) == (None, "asyncio")
    else:
        assert factory is not None and name.startswith("uvloop")
        loop = factory()
        try:
            loop.set_task_factory(asyncio.eager_task_factory)
            assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
        finally:
            loop.close()
