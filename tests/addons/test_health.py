"""/healthz and /readyz: answered locally; readiness needs listeners, an engine and the store."""

from __future__ import annotations

import json

from flm_gateway.addons.health_endpoints import Health
from flm_gateway.addons.listener_context import ListenerContext
from tests.support.flows import RuntimeFactory, configure, make_flow


def _ask(
    runtime_health: Health, context: ListenerContext, path: str
) -> tuple[int, dict[str, object]]:
    flow = make_flow("GET", path)
    context.requestheaders(flow)
    runtime_health.request(flow)
    assert flow.response is not None
    return flow.response.status_code, json.loads(flow.response.content or b"{}")


async def test_ready_needs_a_healthy_engine_and_a_usable_state_store(
    make_runtime: RuntimeFactory,
) -> None:
    runtime = make_runtime(healthy={"alpha": ["tiny-a"]})
    health, context = Health(), ListenerContext()
    configure(runtime, health)
    configure(runtime, context)
    assert _ask(health, context, "/healthz") == (200, {"status": "ok"})
    status, body = _ask(health, context, "/readyz")
    assert (status, body["status"], body["engines_up"], body["state_store_ok"]) == (
        200,
        "ready",
        1,
        True,
    )

    runtime.state_usable = lambda: False
    status, body = _ask(health, context, "/readyz")
    assert (status, body["status"], body["state_store_ok"]) == (503, "not-ready", False)


async def test_not_ready_without_a_healthy_engine(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    health, context = Health(), ListenerContext()
    configure(runtime, health)
    configure(runtime, context)
    status, body = _ask(health, context, "/readyz")
    assert (status, body["engines_up"]) == (503, 0)
    assert "alpha" not in json.dumps(body)  # counts only, no engine names
