"""The egress addon on mitmproxy test flows: via per engine, the shared server_conn pitfall,
fail-closed dials, fail open, Tor not ready, the bridge token. No socket is opened except
the bridge's own listeners, which are bound but never dialled here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mitmproxy import connection
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow, tutils

from flm_gateway.addons.egress_dispatch import Egress
from flm_gateway.config import LoadedConfig, parse_config
from flm_gateway.egress.dialer import SocksDialer
from flm_gateway.egress.failure import EgressFailure, Reason
from flm_gateway.egress.tor import BootstrapStatus, TorControl
from flm_gateway.proxy.flow_meta import EGRESS_FAILURE, EGRESS_PROFILE, ROUTE_ENGINE
from tests.support.flows import configure

CONFIG = """\
listeners: [{name: main, bind: "127.0.0.1:8088"}]
egress:
  bastion: {mode: socks5, url: "socks5://127.0.0.1:1"}
  flaky: {mode: socks5, url: "socks5://127.0.0.1:2", fail: open}
  onion: {mode: tor, control: "127.0.0.1:9"}
engines:
  - {name: far, url: "http://10.0.0.7:8000", egress: bastion}
  - {name: near, url: "http://127.0.0.1:8001"}
  - {name: maybe, url: "http://10.0.0.8:8000", egress: flaky}
  - {name: hidden, url: "http://abc.onion", egress: onion}
"""


@pytest.fixture
async def addon() -> AsyncIterator[Egress]:
    egress = Egress()
    config, state_dir = parse_config(CONFIG, environ={})
    configure(LoadedConfig(config=config, path=None, state_dir=state_dir, source=""), egress)
    await egress.running()
    yield egress
    await egress.done()


def routed(engine: str, host: str, port: int) -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.response = None
    flow.request.host, flow.request.port = host, port
    flow.server_conn = connection.Server(address=(host, port))
    ROUTE_ENGINE.set(flow, engine)
    return flow


def connect_data(address: tuple[str, int]) -> server_hooks.ServerConnectionHookData:
    return server_hooks.ServerConnectionHookData(
        server=connection.Server(address=address), client=tflow.tclient_conn()
    )


async def test_proxied_engine_goes_via_its_bridge(addon: Egress) -> None:
    flow = routed("far", "10.0.0.7", 8000)
    await addon.request(flow)
    bridge = addon.service.bridge.address("bastion")
    assert bridge is not None
    assert flow.server_conn.via == ("http", bridge)
    assert EGRESS_PROFILE.require(flow) == "bastion"
    assert flow.response is None


async def test_direct_engine_resets_a_sticky_via(addon: Egress) -> None:
    flow = routed("near", "127.0.0.1", 8001)
    flow.server_conn.via = ("http", ("127.0.0.1", 3128))
    await addon.request(flow)
    assert flow.server_conn.via is None
    assert EGRESS_PROFILE.require(flow) == "direct"


async def test_a_used_shared_server_conn_is_replaced_not_changed(addon: Egress) -> None:
    flow = routed("far", "10.0.0.7", 8000)
    shared = connection.Server(address=("127.0.0.1", 8001))
    shared.timestamp_start = 1.0
    shared.state = connection.ConnectionState.OPEN  # changing via would raise
    flow.server_conn = shared
    await addon.request(flow)
    assert flow.server_conn is not shared
    assert shared.via is None
    assert flow.server_conn.via == ("http", addon.service.bridge.address("bastion"))


async def test_unrouted_and_answered_flows_are_left_alone(addon: Egress) -> None:
    flow = tflow.tflow()
    flow.response = None
    await addon.request(flow)
    assert not EGRESS_PROFILE.is_set(flow)
    answered = routed("far", "10.0.0.7", 8000)
    answered.response = tutils.tresp()
    await addon.request(answered)
    assert answered.server_conn.via is None


def test_fail_closed_refuses_direct_dials_of_proxied_engines(addon: Egress) -> None:
    data = connect_data(("10.0.0.7", 8000))
    addon.server_connect(data)
    assert data.server.error is not None and "reason=direct_refused" in data.server.error
    assert "profile=bastion" in data.server.error
    for allowed in [("127.0.0.1", 8001), ("10.0.0.8", 8000)]:  # direct, fail-open
        data = connect_data(allowed)
        addon.server_connect(data)
        assert data.server.error is None
    bridge = addon.service.bridge.address("bastion")
    assert bridge is not None
    data = connect_data(bridge)
    addon.server_connect(data)
    assert data.server.error is None


async def test_no_bridge_fails_closed_or_goes_direct_when_open() -> None:
    egress = Egress()
    config, state_dir = parse_config(CONFIG, environ={})
    configure(LoadedConfig(config=config, path=None, state_dir=state_dir, source=""), egress)
    # running() never happened: no bridge to send flows via.
    flow = routed("far", "10.0.0.7", 8000)
    await egress.request(flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert b"egress_unavailable" in (flow.response.content or b"")
    flow = routed("maybe", "10.0.0.8", 8000)
    await egress.request(flow)
    assert flow.response is None and flow.server_conn.via is None
    await egress.done()


class NotReady(TorControl):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 9))

    async def status(self, *, fresh: bool = False) -> BootstrapStatus | None:
        return BootstrapStatus(0, "Starting")


async def test_tor_not_bootstrapped_is_answered_503_at_once(addon: Egress) -> None:
    dialer = addon.service.plan.profiles["onion"].dialer
    assert isinstance(dialer, SocksDialer)
    dialer.tor_control = NotReady()
    flow = routed("hidden", "abc.onion", 80)
    await addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 503
    assert b"egress_tor_not_bootstrapped" in (flow.response.content or b"")


async def test_bridge_token_is_added_to_connects_to_the_bridge_only(addon: Egress) -> None:
    bridge = addon.service.bridge.address("bastion")
    assert bridge is not None
    connect = tflow.tflow()
    connect.server_conn = connection.Server(address=bridge)
    addon.http_connect_upstream(connect)
    assert connect.request.headers["Proxy-Authorization"] == addon.service.proxy_authorization
    other = tflow.tflow()
    other.server_conn = connection.Server(address=("127.0.0.1", 3128))
    addon.http_connect_upstream(other)
    assert "Proxy-Authorization" not in other.request.headers


def test_error_hook_records_the_egress_failure(addon: Egress) -> None:
    flow = routed("far", "10.0.0.7", 8000)
    EGRESS_PROFILE.set(flow, "bastion")
    failure = EgressFailure("bastion", "socks5", Reason.PROXY_AUTH_REJECTED)
    flow.error = tflow.terr(
        f"Upstream proxy x refused HTTP CONNECT request: 502 {failure.marker()}"
    )
    addon.error(flow)
    recorded = EGRESS_FAILURE.require(flow)
    assert isinstance(recorded, EgressFailure) and recorded.reason is Reason.PROXY_AUTH_REJECTED
