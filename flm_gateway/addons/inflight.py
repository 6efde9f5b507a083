"""Count the requests in flight, so shutdown and reload can wait for them to finish.

Policy: a flow counts from `requestheaders` until its `response` hook (which,
for a streamed response, fires after the last chunk) or its `error` hook, and at
the latest until its client connection is gone (`client_disconnected`): a flow
that mitmproxy failed to end (a crashed layer calls no hook) cannot keep the
count raised, or drain waiting, forever.
Nothing is rejected here; the gateway reads `count` and `wait_idle`, and a
reload waits (`snapshot`, `wait_finished`) for the requests that were in flight
when it swapped the runtime before closing the old engine sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from mitmproxy import connection, http

from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.fail_closed import fail_closed


class Inflight(Unconfigured):
    def __init__(self) -> None:
        self._flows: dict[str, str] = {}  # flow id -> its client connection's id
        self._by_client: dict[str, set[str]] = {}  # client connection id -> its flows
        self._idle = asyncio.Event()
        self._idle.set()
        self._waiters: list[tuple[set[str], asyncio.Future[None]]] = []

    @property
    def count(self) -> int:
        return len(self._flows)

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn.id
        self._flows[flow.id] = client
        self._by_client.setdefault(client, set()).add(flow.id)
        self._idle.clear()

    def _finish(self, flow: http.HTTPFlow) -> None:
        client = self._flows.pop(flow.id, None)
        if client is not None:
            flows = self._by_client[client]
            flows.discard(flow.id)
            if not flows:
                del self._by_client[client]
        self._finished((flow.id,))

    def client_disconnected(self, client: connection.Client) -> None:
        flows = self._by_client.pop(client.id, None)
        if flows:
            for flow_id in flows:
                del self._flows[flow_id]
            self._finished(flows)

    def _finished(self, ids: Collection[str]) -> None:
        if not self._flows:
            self._idle.set()
        if self._waiters:
            for remaining, waiter in self._waiters:
                remaining.difference_update(ids)
                if not remaining and not waiter.done():
                    waiter.set_result(None)
            self._waiters = [(r, w) for r, w in self._waiters if not w.done()]

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

    def snapshot(self) -> frozenset[str]:
        """The ids of the flows in flight now."""
        return frozenset(self._flows)

    async def wait_finished(self, flows: frozenset[str]) -> None:
        """Return once every flow in `flows` has finished."""
        remaining = set(flows) & self._flows.keys()
        if not remaining:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((remaining, waiter))
        await waiter
