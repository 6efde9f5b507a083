"""mitmproxy's per-message type check is off in the gateway (proxy/mitm_typecheck.py)."""

from __future__ import annotations

import gc
from collections.abc import Callable

from mitmproxy import http

from flm_gateway.proxy import mitm_typecheck


def _garbage_of(make: Callable[[], object], count: int = 50) -> int:
    """Objects the cyclic collector frees after `count` messages were made and dropped."""
    gc.collect()
    for _ in range(count):
        make()
    return gc.collect()


def test_the_internals_it_relies_on() -> None:
    # The check is MessageData's own method (defined under __debug__); the request and
    # response data classes inherit it, so replacing it once covers both.
    assert "__post_init__" not in vars(http.RequestData)
    assert "__post_init__" not in vars(http.ResponseData)
    assert "__post_init__" in vars(http.MessageData) or not __debug__


def test_messages_are_built_without_the_check_and_without_cyclic_garbage() -> None:
    def make() -> object:
        return http.Response.make(200, b"{}", {"content-type": "application/json"})

    original = mitm_typecheck.MITMPROXY_CHECK
    try:
        if original is not None:
            http.MessageData.__post_init__ = original  # type: ignore[method-assign]
            assert _garbage_of(make) > 0  # the check's caught TypeErrors leave cycles
        mitm_typecheck.install()
        assert _garbage_of(make) == 0
    finally:
        mitm_typecheck.install()
