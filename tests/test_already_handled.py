"""Every request hook of every addon leaves a flow that is already answered alone.

mitmproxy's own addons are tested this way: once an addon answered a flow (a refusal, a
health answer, an error), no later `requestheaders` or `request` hook may change that
answer, route the flow to an engine or wait for an engine slot. One parametrised test
over the whole pipeline, so a new addon is covered the day it is added.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator

import pytest
from mitmproxy import http

from flm_gateway.addons.inflight import Inflight
from flm_gateway.app.pipeline import build_addons
from flm_gateway.proxy.flow_meta import API_KIND, ROUTE_ENGINE
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.state.state_service import StateService
from tests.support.flows import RuntimeFactory, configure, make_flow

REQUEST_HOOKS = ("requestheaders", "request")
ADDONS = build_addons(Inflight())
ADDON_NAMES = [type(addon).__name__ for addon in ADDONS]
CASES = [
    pytest.param(index, hook, id=f"{type(addon).__name__}.{hook}")
    for index, addon in enumerate(ADDONS)
    for hook in REQUEST_HOOKS
    if callable(getattr(addon, hook, None))
]


@pytest.fixture
async def runtime(make_runtime: RuntimeFactory) -> AsyncIterator[Runtime]:
    yield make_runtime(healthy={"alpha": ["tiny-a"]})


async def call(addon: object, hook: str, flow: http.HTTPFlow) -> None:
    function = getattr(addon, hook, None)
    if callable(function):
        result = function(flow)
        if inspect.isawaitable(result):
            await result


@pytest.mark.parametrize(("index", "hook"), CASES)
async def test_a_request_hook_leaves_an_answered_flow_alone(
    runtime: Runtime, index: int, hook: str
) -> None:
    """The flow first goes through the pipeline up to the addon under test, unanswered, so it
    carries what the earlier addons wrote (listener, API kind, model, body); then it is
    answered, and the addon's hook must leave the answer and the routing alone."""
    state = StateService()
    addons = build_addons(Inflight(), state=state)
    state.open(runtime.loaded)  # the gateway opens the store between prepare and commit
    configure(runtime, *addons)
    runtime.directory.get("alpha").last_connect_ok = time.monotonic()  # no probe dial
    flow = make_flow(body={"model": "tiny-a", "messages": [{"role": "user", "content": "x"}]})
    earlier = [(a, "requestheaders") for a in addons[:index]]
    if hook == "request":
        earlier = [(a, "requestheaders") for a in addons] + [(a, "request") for a in addons[:index]]
    for addon, name in earlier:
        await call(addon, name, flow)
    assert flow.response is None, "an earlier addon answered: the case would test nothing"
    assert (
        hook == "requestheaders"
        or index <= ADDON_NAMES.index("OpenAIApi")
        or (API_KIND.get(flow) == "chat")
    )
    ROUTE_ENGINE.pop(flow)
    answer = http.Response.make(418, b'{"already": "answered"}', {"x-answer": "first"})
    flow.response = answer
    before = (answer.status_code, answer.content, list(answer.headers.items(multi=True)))
    await call(addons[index], hook, flow)
    assert flow.response is answer
    assert (answer.status_code, answer.content) == before[:2]
    assert list(answer.headers.items(multi=True)) == before[2]
    assert not ROUTE_ENGINE.is_set(flow)  # never routed, never dialled


def test_every_addon_with_a_request_hook_is_covered() -> None:
    covered = {case.values[0] for case in CASES}
    with_hooks = {
        i
        for i, addon in enumerate(ADDONS)
        if any(callable(getattr(addon, h, None)) for h in REQUEST_HOOKS)
    }
    assert covered == with_hooks and len(covered) > 20
