"""The pipeline: one explicit order, and every flow hook of every addon fails closed."""

from __future__ import annotations

import asyncio

from flm_gateway.addons.inflight import Inflight
from flm_gateway.app.pipeline import build_addons

FLOW_HOOKS = ("requestheaders", "request", "responseheaders", "response")


async def test_every_flow_hook_is_wrapped_by_fail_closed() -> None:
    unguarded = [
        f"{type(addon).__name__}.{hook}"
        for addon in build_addons(Inflight())
        for hook in FLOW_HOOKS
        if hasattr(addon, hook) and not hasattr(getattr(type(addon), hook), "__wrapped__")
    ]
    assert unguarded == []


async def test_order_puts_routing_after_the_api_and_guard_last_on_request() -> None:
    names = [type(addon).__name__ for addon in build_addons(Inflight())]
    assert names.index("OpenAIApi") < names.index("Routing") < names.index("UpstreamGuard")
    assert names[0] == "Inflight" and names[1] == "ListenerContext"
    assert names.index("Routing") + 1 == names.index("Failover") < names.index("Egress")


async def test_architecture_doc_lists_every_addon_in_order() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    rows = [
        line
        for line in doc.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    ]
    documented = [row.split("`")[1].split(" ")[0] for row in rows]
    modules = [type(addon).__module__.rsplit(".", 1)[-1] for addon in build_addons(Inflight())]
    assert documented == modules


async def test_inflight_ends_the_flows_of_a_client_that_is_gone() -> None:
    """A flow mitmproxy never ended (a crashed layer calls no hook) is uncounted when its
    client connection goes, so drain and the in-flight gauge cannot wait forever."""
    from mitmproxy.test import tflow

    inflight = Inflight()
    orphan, other = tflow.tflow(), tflow.tflow()
    inflight.requestheaders(orphan)
    inflight.requestheaders(other)
    waiting = asyncio.ensure_future(inflight.wait_finished(inflight.snapshot()))
    inflight.client_disconnected(orphan.client_conn)
    assert inflight.count == 1 and not waiting.done()
    inflight.response(other)
    await asyncio.wait_for(waiting, 1)
    assert inflight.count == 0 and await inflight.wait_idle(0.1)
