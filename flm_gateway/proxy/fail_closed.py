"""Fail closed: an exception inside a hook answers the client, it never lets the flow through.

mitmproxy logs an exception raised by a hook and then carries on forwarding the
flow. Every hook of ours is wrapped by `fail_closed`, which instead logs the
traceback server-side and answers 500 in OpenAI's error shape (or `status`, e.g.
503 for a security addon whose state store is unavailable). If the response had
already started streaming, the flow is killed: a half-sent stream is cut rather
than continued unchecked.

A synchronous hook may return an awaitable when, for this flow, it has async
work to do (mitmproxy awaits what a hook returns): the wrapper returns it guarded
the same way, so the common path stays synchronous and pays no coroutine.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mitmproxy import http

from flm_gateway.core.errors import error_response
from flm_gateway.proxy.flow_meta import GUARD_FAILED

log = logging.getLogger("flm_gateway.addons")

Hook = TypeVar("Hook", bound=Callable[..., Any])


def _fail(addon: object, hook: str, flow: http.HTTPFlow, status: int) -> None:
    name = type(addon).__name__
    log.exception("%s.%s failed on %s %s", name, hook, flow.request.method, flow.request.path)
    GUARD_FAILED.set(flow, f"{name}.{hook}")
    if flow.response is not None and flow.response.stream:
        flow.kill()
        return
    flow.response = error_response(
        status, "The gateway could not process this request.", "server_error", "internal_error"
    )


def fail_closed(status: int = 500) -> Callable[[Hook], Hook]:
    """Decorate a hook method `(self, flow)` so that an exception answers `status` instead."""

    def decorate(hook: Hook) -> Hook:
        if inspect.iscoroutinefunction(hook):

            @functools.wraps(hook)
            async def async_wrapper(self: object, flow: http.HTTPFlow) -> None:
                try:
                    await hook(self, flow)
                except Exception:
                    _fail(self, hook.__name__, flow, status)

            return async_wrapper  # type: ignore[return-value]

        async def guarded(self: object, flow: http.HTTPFlow, pending: Awaitable[Any]) -> None:
            try:
                await pending
            except Exception:
                _fail(self, hook.__name__, flow, status)

        @functools.wraps(hook)
        def wrapper(self: object, flow: http.HTTPFlow) -> Awaitable[None] | None:
            try:
                result = hook(self, flow)
            except Exception:
                _fail(self, hook.__name__, flow, status)
                return None
            if result is None:  # the common case: skip isawaitable's ABC check (~0.3 µs)
                return None
            if inspect.isawaitable(result):
                return guarded(self, flow, result)
            return None

        return wrapper  # type: ignore[return-value]

    return decorate
