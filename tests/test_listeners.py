"""listeners: a flow belongs to the socket that accepted it, never to a port alone."""

from __future__ import annotations

from flm_gateway.addons.listener_context import ListenerContext
from flm_gateway.proxy.flow_meta import LISTENER
from tests.support.flows import RuntimeFactory, configure, make_flow

CONFIG = """\
listeners:
  - {name: keyed, bind: "127.0.0.1:8088", auth: api-key}
  - {name: open, bind: "127.0.0.2:8088", auth: none}
  - {name: six, bind: "[::1]:8088", auth: none}
  - {name: dual, bind: "[::]:8090", auth: api-key}
  - {name: local, bind: "localhost:8091", auth: none}
engines:
  - {name: alpha, kind: vllm, url: "http://127.0.0.1:18001"}
"""


async def test_listener_by_socket(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(CONFIG)
    cases = [
        ("127.0.0.1", 8088, "keyed"),
        ("127.0.0.2", 8088, "open"),
        ("::1", 8088, "six"),
        ("::", 8090, "dual"),
        ("localhost", 8091, "local"),
        ("127.0.0.3", 8088, None),  # a socket we do not (or no longer) listen on
        ("127.0.0.1", 8090, None),
    ]
    for host, port, expected in cases:
        flow = make_flow(port=port, bind_host=host)
        listener = runtime.listener_of(flow)
        assert (listener.name if listener else None) == expected, (host, port)


async def test_the_local_address_of_a_connection_does_not_choose(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(CONFIG)
    # Accepted by the 127.0.0.1 socket, whatever the connection's local address says
    # (a wildcard socket's connections carry the concrete address, a mapped one, ...).
    for sockname in (("127.0.0.2", 8088), ("::ffff:127.0.0.2", 8088, 0, 0), ("::1", 8088, 0, 0)):
        flow = make_flow(port=8088, bind_host="127.0.0.1")
        flow.client_conn.sockname = sockname
        listener = runtime.listener_of(flow)
        assert listener is not None and listener.name == "keyed"
    # A dual-stack listener's IPv4 connections are its own.
    flow = make_flow(port=8090, bind_host="::")
    flow.client_conn.sockname = ("192.0.2.1", 8090)
    listener = runtime.listener_of(flow)
    assert listener is not None and listener.name == "dual"


async def test_listener_context_tags_and_answers_orphans(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime(CONFIG)
    context = ListenerContext()
    configure(runtime, context)
    flow = make_flow(port=8088, bind_host="127.0.0.2")
    context.requestheaders(flow)
    assert LISTENER.require(flow).name == "open"
    orphan = make_flow(port=8088, bind_host="127.0.0.9")
    context.requestheaders(orphan)
    context.request(orphan)
    assert orphan.response is not None and orphan.response.status_code == 503
