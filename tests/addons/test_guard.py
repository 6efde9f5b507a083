from __future__ import annotations

import logging
from collections.abc import Awaitable

import pytest
from mitmproxy import http

from flm_gateway.addons.upstream_guard import UpstreamGuard
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import GUARD_FAILED, ROUTE_ENGINE
from tests.support.flows import error_of, make_flow


class Broken:
    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        raise RuntimeError("boom with secret sk-123")

    @fail_closed(503)
    async def response(self, flow: http.HTTPFlow) -> None:
        raise KeyError("x")


def test_exception_becomes_500_without_details(caplog: pytest.LogCaptureFixture) -> None:
    flow = make_flow(body={"model": "m"})
    with caplog.at_level(logging.ERROR):
        Broken().request(flow)
    status, error = error_of(flow)
    assert (status, error["type"]) == (500, "server_error")
    assert "boom" not in error["message"] and "Traceback" not in error["message"]
    assert "Broken.request failed" in caplog.text
    assert GUARD_FAILED.require(flow) == "Broken.request"


async def test_async_hook_uses_its_status() -> None:
    flow = make_flow(body={"model": "m"})
    await Broken().response(flow)
    assert error_of(flow)[0] == 503


def test_streaming_response_is_killed_not_continued() -> None:
    flow = make_flow(body={"model": "m"})
    flow.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    flow.response.stream = True
    Broken().request(flow)
    assert flow.error is not None and flow.error.msg == "Connection killed."


def test_unrouted_flow_is_never_forwarded() -> None:
    flow = make_flow(body={"model": "m"})
    UpstreamGuard().request(flow)
    assert error_of(flow)[0] == 500
    routed = make_flow(body={"model": "m"})
    ROUTE_ENGINE.set(routed, "alpha")
    UpstreamGuard().request(routed)
    assert routed.response is None


def test_dial_to_the_listener_placeholder_is_refused() -> None:
    from mitmproxy.proxy import server_hooks
    from mitmproxy.test import tflow

    from flm_gateway.proxy.mitm_listeners import PLACEHOLDER_TARGET

    server = tflow.tserver_conn()
    server.address = PLACEHOLDER_TARGET
    data = server_hooks.ServerConnectionHookData(server=server, client=tflow.tclient_conn())
    UpstreamGuard().server_connect(data)
    assert server.error is not None
    engine = tflow.tserver_conn()
    engine.address = ("127.0.0.1", 18001)
    UpstreamGuard().server_connect(
        server_hooks.ServerConnectionHookData(server=engine, client=tflow.tclient_conn())
    )
    assert engine.error is None


class Deferring:
    @fail_closed(503)
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        async def later() -> None:
            raise RuntimeError("failed after the hook returned")

        return later() if flow.request.path == "/later" else None


async def test_a_sync_hook_may_defer_to_async_work_which_is_guarded_too() -> None:
    now = make_flow(body={"model": "m"})
    assert Deferring().requestheaders(now) is None and now.response is None
    later = make_flow(body={"model": "m"})
    later.request.path = "/later"
    pending = Deferring().requestheaders(later)
    assert pending is not None and later.response is None
    await pending
    assert error_of(later)[0] == 503
    assert GUARD_FAILED.require(later) == "Deferring.requestheaders"
