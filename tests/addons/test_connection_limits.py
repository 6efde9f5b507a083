"""connection_limits: caps per client (IPv6 per /64) and in all, exemptions, the first-request
timer; no sockets (mitmproxy's client objects, the event loop's timers)."""

from __future__ import annotations

import asyncio

from mitmproxy import connection
from mitmproxy.test import tflow

from flm_gateway.addons.connection_limits import ConnectionLimits, client_key
from flm_gateway.config import LoadedConfig, parse_config
from flm_gateway.observability.metrics import GatewayMetrics
from tests.support.flows import configure

CONFIG = """\
server: {limits: {max_connections_per_client: 2, max_connections: 5, header_timeout: 0.05}}
listeners:
  - name: main
    bind: "127.0.0.1:8088"
    security: {ip: {trusted_proxies: ["10.0.0.1"]}}
"""


def client(address: str) -> connection.Client:
    conn = tflow.tclient_conn()
    conn.peername = (address, 40000)
    conn.error = None
    return conn


def limits(handlers: dict[str, object] | None = None) -> ConnectionLimits:
    addon = ConnectionLimits(GatewayMetrics(), lambda: handlers or {})
    config, state_dir = parse_config(CONFIG, environ={})
    configure(LoadedConfig(config=config, path=None, state_dir=state_dir, source=CONFIG), addon)
    return addon


def test_ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key(("2001:db8:1:2:aaaa::1", 1))[0] == client_key(("2001:db8:1:2::9", 1))[0]
    assert client_key(("2001:db8:1:3::1", 1))[0] != client_key(("2001:db8:1:2::1", 1))[0]
    assert client_key(("::ffff:192.0.2.7", 1))[0] == "192.0.2.7"


async def test_a_client_over_its_share_is_closed_and_gets_it_back_on_disconnect() -> None:
    addon = limits()
    first, second, third = (client("192.0.2.1") for _ in range(3))
    for conn in (first, second, third):
        addon.client_connected(conn)
    assert (first.error, second.error) == (None, None)
    assert third.error == "per-client connection limit"
    other = client("192.0.2.2")
    addon.client_connected(other)
    assert other.error is None
    for conn in (third, first):  # a refused connection's disconnect changes nothing
        addon.client_disconnected(conn)
    again = client("192.0.2.1")
    addon.client_connected(again)
    assert again.error is None and addon.open_connections == 3


async def test_trusted_proxies_are_exempt_from_the_share_not_from_the_total() -> None:
    addon = limits()
    proxied = [client("10.0.0.1") for _ in range(5)]
    for conn in proxied:
        addon.client_connected(conn)
    assert [c.error for c in proxied] == [None] * 5
    late = client("192.0.2.9")
    addon.client_connected(late)
    assert late.error == "connection limit"


async def test_a_first_request_ends_the_wait_and_a_silent_connection_is_closed() -> None:
    closed: list[str] = []

    class Handler:
        """What mitmproxy's connection handler offers: its client and close_connection."""

        def __init__(self, conn: connection.Client) -> None:
            self.client = conn

        def close_connection(self, conn: connection.Client) -> None:
            closed.append(conn.id)

    speaking, silent = client("192.0.2.3"), client("192.0.2.4")
    addon = limits({c.id: Handler(c) for c in (speaking, silent)})
    addon.client_connected(speaking)
    addon.client_connected(silent)
    flow = tflow.tflow()
    flow.client_conn = speaking
    addon.requestheaders(flow)
    await asyncio.sleep(0.05 + 1.2)  # header_timeout plus the grace
    assert closed == [silent.id]
