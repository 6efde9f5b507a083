"""request_limits: allowed paths, body size, max_tokens per listener, route and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flm_gateway.addons.request_limits import RequestLimits, budget_tokens
from flm_gateway.bodies import BodyError
from flm_gateway.proxy.flow_meta import API_BODY, API_KIND, API_MODEL, AUTH_KEY
from flm_gateway.state.store import KeyLimits, KeyRecord
from tests.support.flows import configure, error_of
from tests.support.security import BASE, flow, loaded, run_hooks

SECURITY = """
request_limits:
  max_body_size: 1KiB
  max_tokens: 512
  max_tokens_per_route: {"tiny-*": 256}
  allowed_paths: ["/v1/chat/completions", "/v1/models*"]
"""


def _chat(config, body: dict[str, object], key: KeyRecord | None = None):  # type: ignore[no-untyped-def]
    target = flow(config, "POST", "/v1/chat/completions", body=body)
    API_KIND.set(target, "chat")
    API_BODY.set(target, body)
    API_MODEL.set(target, body["model"])
    if key is not None:
        AUTH_KEY.set(target, key)
    return target


async def test_paths_and_sizes(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    addon = RequestLimits()
    configure(config, addon)
    for path, allowed in (
        ("/v1/chat/completions", True),
        ("/v1/models/tiny-a", True),
        ("/v1/embeddings", False),
        ("/healthz", True),
    ):
        target = flow(config, path=path)
        await run_hooks([addon], target, ("requestheaders",))
        assert (target.response is None) is allowed, path
    declared = flow(config, "POST", "/v1/chat/completions", headers={"content-length": "5000"})
    await run_hooks([addon], declared, ("requestheaders",))
    assert error_of(declared)[1]["code"] == "request_too_large"
    chunked = flow(config, "POST", "/v1/chat/completions", body={"model": "x", "p": "y" * 2000})
    await run_hooks([addon], chunked, ("request",))
    assert error_of(chunked)[0] == 413


async def test_max_tokens_caps(tmp_path: Path) -> None:
    config = loaded(SECURITY.replace("  max_body_size: 1KiB\n", ""), tmp_path)
    addon = RequestLimits()
    configure(config, addon)

    over = _chat(config, {"model": "big", "messages": [], "max_tokens": 600})
    await run_hooks([addon], over, ("request",))
    assert error_of(over)[1]["code"] == "max_tokens_exceeded"
    ok = _chat(config, {"model": "big", "messages": [], "max_tokens": 500})
    await run_hooks([addon], ok, ("request",))
    assert ok.response is None
    route = _chat(config, {"model": "tiny-a", "messages": [], "max_completion_tokens": 300})
    await run_hooks([addon], route, ("request",))
    assert error_of(route)[0] == 400
    key = KeyRecord("k", "k", 0.0, (), limits=KeyLimits(max_tokens=100))
    by_key = _chat(config, {"model": "big", "messages": [], "max_tokens": 101}, key)
    await run_hooks([addon], by_key, ("request",))
    assert error_of(by_key)[0] == 400
    unset = _chat(config, {"model": "tiny-b", "messages": []}, key)
    await run_hooks([addon], unset, ("request",))
    assert unset.response is None
    assert json.loads(unset.request.content or b"{}")["max_tokens"] == 100
    assert API_BODY.require(unset)["max_tokens"] == 100
    # Types (a string, -1, null) are openai_api's (tests/addons/test_openai_api.py).


@pytest.mark.parametrize(
    ("body", "defaults", "final"),
    [
        ({}, {}, {"max_tokens": 100}),
        ({"max_tokens": 40}, {}, {"max_tokens": 40}),
        # Ollama reads only max_tokens: it is set beside the client's other field.
        ({"max_completion_tokens": 40}, {}, {"max_tokens": 40, "max_completion_tokens": 40}),
        ({"n_predict": 40}, {}, {"max_tokens": 40, "n_predict": 40}),
        # A route default below the cap stands; above it, the cap.
        ({}, {"max_tokens": 30}, {"max_tokens": 30}),
        ({}, {"max_tokens": 5000}, {"max_tokens": 100}),
        # A default for another token field cannot raise the value later.
        ({}, {"max_completion_tokens": 500}, {"max_tokens": 100, "max_completion_tokens": 100}),
        ({"max_tokens": 10}, {"max_completion_tokens": 500}, {"max_tokens": 10}),
        # Choices share the cap, whether the client or the route asks for them.
        ({"n": 4}, {}, {"n": 4, "max_tokens": 25}),
        ({"best_of": 3, "n": 2}, {}, {"best_of": 3, "n": 2, "max_tokens": 33}),
        ({}, {"n": 4, "max_tokens": 60}, {"max_tokens": 25}),
        ({"n": 2, "max_tokens": 50}, {}, {"n": 2, "max_tokens": 50}),
    ],
)
def test_budget_is_decided_after_route_defaults(
    body: dict[str, object], defaults: dict[str, object], final: dict[str, object]
) -> None:
    checked = dict(body)
    changed = budget_tokens(checked, defaults, 100)
    assert checked == final
    assert changed == (body != final)


@pytest.mark.parametrize(
    ("body", "defaults", "param"),
    [
        ({"max_tokens": 101}, {}, "max_tokens"),
        ({"max_completion_tokens": 101}, {}, "max_completion_tokens"),
        ({"n_predict": 1000}, {}, "n_predict"),
        ({"max_tokens": 60, "n": 2}, {}, "n"),
        ({"max_tokens": 60}, {"n": 2}, "n"),
        ({"max_tokens": 30, "best_of": 4}, {}, "best_of"),
        ({"n": 128}, {}, "n"),
    ],
)
def test_budget_refusals_name_the_field(
    body: dict[str, object], defaults: dict[str, object], param: str
) -> None:
    with pytest.raises(BodyError) as refused:
        budget_tokens(dict(body), defaults, 100)
    assert (refused.value.code, refused.value.param) == ("max_tokens_exceeded", param)


def test_unchanged_budget_keeps_the_client_bytes() -> None:
    assert budget_tokens({"max_tokens": 40}, {}, 100) is False
    assert budget_tokens({"max_tokens": 40, "max_completion_tokens": 40}, {}, 100) is False
    assert budget_tokens({}, {}, 100) is True


async def _sent_with_route_defaults(tmp_path: Path, defaults: str) -> dict[str, object]:
    """The body an empty chat request leaves with, on a route with `defaults` under a
    listener cap of 512 tokens (nothing refused)."""
    base = BASE.replace(
        "  - {model: chat, engine: alpha}",
        f"  - {{model: chat, engine: alpha, defaults: {defaults}}}",
    )
    config = loaded("request_limits:\n  max_tokens: 512", tmp_path, base)
    addon = RequestLimits()
    configure(config, addon)
    target = _chat(config, {"model": "chat", "messages": []})
    await run_hooks([addon], target, ("request",))
    assert target.response is None
    sent: dict[str, object] = json.loads(target.request.content or b"{}")
    return sent


async def test_route_default_below_the_listener_cap_is_kept(tmp_path: Path) -> None:
    sent = await _sent_with_route_defaults(tmp_path, "{max_tokens: 64}")
    assert sent["max_tokens"] == 64


async def test_route_extra_token_field_is_bounded_by_the_cap(tmp_path: Path) -> None:
    sent = await _sent_with_route_defaults(tmp_path, "{extra: {n_predict: 900, top_k: 40}}")
    assert (sent["max_tokens"], sent["n_predict"]) == (512, 512)
