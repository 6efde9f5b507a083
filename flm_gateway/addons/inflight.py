"""Count the requests in flight, so shutdown and reload can wait for them to finish.

Policy: a flow counts from `requestheaders` until its `response` hook (which,
for a streamed response, fires after the last chunk) or its `error` hook.
Nothing is rejected here; the gateway reads `count` and `wait_idle`.
"""

from __future__ import annotations

import asyncio

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed


class Inflight:
    def __init__(self) -> None:
        self._flows: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return len(self._flows)

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._flows.add(flow.id)
        self._idle.clear()

    def _finish(self, flow: http.HTTPFlow) -> None:
        self._flows.discard(flow.id)
        if not self._flows:
            self._idle.set()

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    async def wait_idle(self, timeout: float) -> bool:
        """True when no request is in flight within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
