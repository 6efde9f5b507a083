"""request_limits: allowed paths, body size, max_tokens per listener, route and key."""

from __future__ import annotations

import json
from pathlib import Path

from flm_gateway.addons.request_limits import RequestLimits
from flm_gateway.state.store import KeyLimits, KeyRecord
from tests.support.flows import error_of
from tests.support.security import flow, loaded, run_hooks

SECURITY = """
request_limits:
  max_body_size: 1KiB
  max_tokens: 512
  max_tokens_per_route: {"tiny-*": 256}
  allowed_paths: ["/v1/chat/completions", "/v1/models*"]
"""


def _chat(config, body: dict[str, object], key: KeyRecord | None = None):  # type: ignore[no-untyped-def]
    target = flow(config, "POST", "/v1/chat/completions", body=body)
    target.metadata["flm.api.kind"] = "chat"
    target.metadata["flm.api.body"] = body
    target.metadata["flm.api.model"] = body["model"]
    if key is not None:
        target.metadata["flm.auth.key"] = key
    return target


async def test_paths_and_sizes(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    addon = RequestLimits()
    addon.apply_config(config)
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
    addon.apply_config(config)

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
    assert unset.metadata["flm.api.body"]["max_tokens"] == 100
    weird = _chat(config, {"model": "big", "messages": [], "max_tokens": "lots"})
    await run_hooks([addon], weird, ("request",))
    assert error_of(weird)[0] == 400
