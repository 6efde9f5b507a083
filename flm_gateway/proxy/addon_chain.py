"""Our addons, registered with mitmproxy as one addon: same hooks, same order, less dispatch.

mitmproxy delivers every event to every top-level addon in turn and pays a fixed toll
per addon whether or not it has that hook: a `safecall` context manager, a coroutine
for `invoke_addon`, a generator walk over the addon's children, and `Hook.args()`
(which calls `dataclasses.fields`). It also follows every flow event with an `update`
event that makes the same round. With mitmproxy 12.2 that is about 1.4 µs per addon per
event, or ~110 µs of a request's ~1 ms of CPU for our ten addons (see
docs/performance.md). `AddonChain` is one addon that holds ours in pipeline order and,
for each hook, calls only the addons that define it.

It keeps mitmproxy's semantics for each addon it holds: a hook that returns an
awaitable is awaited before the next addon runs; an exception is logged and the next
addon still runs (what `safecall` does per top-level addon); `AddonHalt` and
`OptionsError` propagate, so mitmproxy stops the event or rejects the option change as
before. A hook is sync unless one of the addons defines it as a coroutine function, so
mitmproxy's sync-only calls (`load`) keep working. A sync dispatch whose hook returns an
awaitable (a sync hook with async work for this flow only, see `fail_closed`)
returns a coroutine that awaits it and runs the remaining addons: mitmproxy awaits what
a hook returns, so the order holds and the common path stays synchronous.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mitmproxy.proxy.layers  # noqa: F401  (registers every hook mitmproxy can call)
from mitmproxy import exceptions, hooks

log = logging.getLogger("flm_gateway.addons")

_PROPAGATE = (exceptions.AddonHalt, exceptions.OptionsError)


def hook_names(addon: object) -> list[str]:
    """The mitmproxy hooks `addon` defines, as mitmproxy finds them (callable attributes)."""
    return [name for name in hooks.all_hooks if callable(getattr(addon, name, None))]


def _log_failure(addon: object, name: str, exc: Exception) -> None:
    log.error("Addon error in %s.%s: %s", type(addon).__name__, name, exc, exc_info=exc)


Calls = Sequence[tuple[object, Callable[..., Any]]]


def _sync_dispatcher(name: str, calls: Calls) -> Any:
    def dispatch(*args: Any) -> Awaitable[None] | None:
        for index, (addon, func) in enumerate(calls):
            try:
                result = func(*args)
            except _PROPAGATE:
                raise
            except Exception as exc:
                _log_failure(addon, name, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                return _finish_async(name, calls, index, result, args)
        return None

    return dispatch


async def _finish_async(
    name: str, calls: Calls, index: int, pending: Awaitable[Any], args: tuple[Any, ...]
) -> None:
    """Await the awaitable `calls[index]` returned, then run the addons after it."""
    try:
        await pending
    except _PROPAGATE:
        raise
    except Exception as exc:
        _log_failure(calls[index][0], name, exc)
    await _async_dispatcher(name, calls[index + 1 :])(*args)


def _async_dispatcher(name: str, calls: Calls) -> Any:
    async def dispatch(*args: Any) -> None:
        for addon, func in calls:
            try:
                result = func(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
            except _PROPAGATE:
                raise
            except Exception as exc:
                _log_failure(addon, name, exc)

    return dispatch


class AddonChain:
    """One mitmproxy addon that calls `addons`' hooks in order (see the module docstring)."""

    def __init__(self, addons: Sequence[object]) -> None:
        self.chain = tuple(addons)
        names: dict[str, None] = {}
        for addon in self.chain:
            if hasattr(addon, "addons"):
                raise ValueError(f"{type(addon).__name__} has sub-addons; add it to the Master")
            names.update(dict.fromkeys(hook_names(addon)))
        for name in names:
            calls = [(a, getattr(a, name)) for a in self.chain if name in hook_names(a)]
            is_async = any(inspect.iscoroutinefunction(func) for _, func in calls)
            factory = _async_dispatcher if is_async else _sync_dispatcher
            setattr(self, name, factory(name, calls))
