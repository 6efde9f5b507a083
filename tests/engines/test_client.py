"""`HttpEngineClient`: replies, JSON or not, failures named without URLs or keys."""

from __future__ import annotations

import pytest

from flm_gateway.config.engine_settings import EngineConfig, EngineKind
from flm_gateway.egress.sessions import direct_session
from flm_gateway.engines.adapter import EngineUnavailable
from flm_gateway.engines.engine_client import HttpEngineClient
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import free_port


async def test_replies_and_key() -> None:
    async with (
        FakeEngine("vllm", ["tiny"], api_key="sk-k") as engine,
        direct_session() as session,
    ):
        keyed = HttpEngineClient(
            EngineConfig(name="e", kind=EngineKind.VLLM, url=engine.url, api_key="sk-k"),
            session,
        )
        health = await keyed.get("/health")
        assert (health.status, health.body) == (200, None)  # vLLM: empty body
        assert (await keyed.get_json("/v1/models"))["data"][0]["id"] == "tiny"
        assert engine.requests[-1].headers["Authorization"] == "Bearer sk-k"
        keyless = HttpEngineClient(
            EngineConfig(name="e", kind=EngineKind.VLLM, url=engine.url), session
        )
        reply = await keyless.get("/v1/models")
        assert reply.status == 401 and not reply.ok
        with pytest.raises(EngineUnavailable, match=r"^GET /v1/models answered 401"):
            await keyless.get_json("/v1/models")


async def test_unreachable_is_named_without_the_url() -> None:
    port = free_port()
    config = EngineConfig(
        name="e", kind=EngineKind.OPENAI, url=f"http://127.0.0.1:{port}", api_key="sk-x"
    )
    async with direct_session() as session:
        with pytest.raises(EngineUnavailable) as caught:
            await HttpEngineClient(config, session).get("/v1/models")
    assert str(caught.value) == "GET /v1/models failed: cannot connect (connection refused)"
