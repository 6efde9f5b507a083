from __future__ import annotations

import pytest

from flm_gateway.addons.listener_context import ListenerContext
from flm_gateway.addons.passthrough import Passthrough, is_ollama_admin
from tests.support.flows import RuntimeFactory, error_of, make_flow


@pytest.mark.parametrize(
    "path",
    [
        "/api/pull",
        "/api/delete",
        "//api/push",
        "/API/Create",
        "/api/copy?x=1",
        "/api/blobs/sha256:abc",
        "/api/pull/",
    ],
)
def test_admin_paths_in_any_spelling(path: str) -> None:
    assert is_ollama_admin(path)


@pytest.mark.parametrize("path", ["/api/tags", "/api/chat", "/api/pulled", "/v1/models"])
def test_ordinary_paths(path: str) -> None:
    assert not is_ollama_admin(path)


async def test_admin_endpoint_is_403_and_never_forwarded(make_runtime: RuntimeFactory) -> None:
    runtime = make_runtime()
    context, passthrough = ListenerContext(), Passthrough()
    context.apply_runtime(runtime)
    passthrough.apply_runtime(runtime)
    flow = make_flow("POST", "/api/pull", {"name": "llama3"}, port=11435)
    context.requestheaders(flow)
    await passthrough.request(flow)
    status, error = error_of(flow)
    assert (status, error["code"]) == (403, "admin_endpoint_disabled")
    assert "flm.route.engine" not in flow.metadata
