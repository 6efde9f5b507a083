"""The pipeline: one explicit order, and every flow hook of every addon fails closed."""

from __future__ import annotations

from flm_gateway.addons.inflight import Inflight
from flm_gateway.pipeline import build_addons

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
    assert names.index("Fallback") < names.index("Streaming")
