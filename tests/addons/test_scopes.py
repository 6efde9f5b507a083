"""scopes: a key limited to models or routes; /v1/models trimmed to what it may use."""

from __future__ import annotations

import json
from pathlib import Path

from mitmproxy import http

from flm_gateway.addons.scopes import Scopes
from flm_gateway.config import LoadedConfig
from flm_gateway.state.store import KeyRecord, KeyScopes
from tests.support.flows import configure, error_of
from tests.support.security import flow, loaded, run_hooks


def _key(**scopes: tuple[str, ...]) -> KeyRecord:
    return KeyRecord("k", "k", 0.0, (), scopes=KeyScopes(**scopes))


async def _routed(
    config: LoadedConfig, key: KeyRecord, model: str, kind: str = "chat"
) -> http.HTTPFlow:
    target = flow(config, "POST", "/v1/chat/completions", body={"model": model})
    target.metadata.update({"flm.auth.key": key, "flm.api.kind": kind, "flm.api.model": model})
    await run_hooks([_scopes(config)], target, ("request",))
    return target


def _scopes(config: LoadedConfig) -> Scopes:
    addon = Scopes()
    configure(config, addon)
    return addon


async def test_model_and_route_scopes(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    models = _key(models=("tiny-*",))
    assert (await _routed(config, models, "tiny-a")).response is None
    denied = await _routed(config, models, "chat")
    status, error = error_of(denied)
    assert (status, error["code"]) == (403, "model_not_allowed")
    routes = _key(routes=("chat",))
    assert (await _routed(config, routes, "chat")).response is None
    assert error_of(await _routed(config, routes, "tiny-a"))[0] == 403
    assert error_of(await _routed(config, routes, "unrouted-model"))[0] == 403
    assert error_of(await _routed(config, models, "x", kind="passthrough"))[0] == 403
    unscoped = _key()
    assert (await _routed(config, unscoped, "anything")).response is None


async def test_models_list_is_trimmed(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    target = flow(config)
    target.metadata.update({"flm.auth.key": _key(models=("tiny-*",)), "flm.api.kind": "models"})
    data = [{"id": "tiny-a"}, {"id": "chat"}, {"id": "tiny-b"}]
    target.response = http.Response.make(200, json.dumps({"object": "list", "data": data}))
    await run_hooks([_scopes(config)], target, ("request",))
    assert target.response is not None
    assert [m["id"] for m in json.loads(target.response.content or b"")["data"]] == [
        "tiny-a",
        "tiny-b",
    ]
    single = flow(config, path="/v1/models/chat")
    single.metadata.update({"flm.auth.key": _key(models=("tiny-*",)), "flm.api.kind": "models"})
    single.response = http.Response.make(200, json.dumps({"id": "chat", "object": "model"}))
    await run_hooks([_scopes(config)], single, ("request",))
    assert error_of(single)[0] == 404
