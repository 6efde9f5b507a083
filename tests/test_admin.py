from __future__ import annotations

import asyncio
import os
import socket
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flm_gateway.config.admin_settings import AdminConfig
from flm_gateway.observability.admin_listener import AdminBindError, AdminServer, GatewayPages
from flm_gateway.observability.metrics import GatewayMetrics
from tests.support.gateway_process import free_port


def admin_config(port: int, **changes: Any) -> AdminConfig:
    return AdminConfig.model_validate({"bind": f"127.0.0.1:{port}", **changes})


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("content-type", ""), await response.text()


async def test_endpoints() -> None:
    metrics = GatewayMetrics()
    runtime: Any = SimpleNamespace(
        listening=True,
        directory=SimpleNamespace(engines={"e": SimpleNamespace(healthy=False, reachable=False)}),
        state_usable=lambda: True,
    )
    server = AdminServer(GatewayPages(metrics, lambda: runtime))
    port = free_port()
    await server.apply(admin_config(port))
    base = f"http://127.0.0.1:{port}"
    try:
        status, content_type, text = await get(base + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"flm_requests", "flm_config_reloads", "flm_build_info"} <= names
        assert (await get(base + "/healthz"))[0] == 200
        status, _, body = await get(base + "/readyz")
        assert status == 503 and '"engines_up": 0' in body
        assert (await get(base + "/other"))[0] == 404
        async with aiohttp.ClientSession() as session, session.post(base + "/metrics") as r:
            assert r.status == 405
    finally:
        await server.stop()


async def test_rebind_and_disable() -> None:
    server = AdminServer(GatewayPages(GatewayMetrics(), lambda: None))
    first, second = free_port(), free_port()
    await server.apply(admin_config(first))
    await server.apply(admin_config(second))
    assert server.bound == ("127.0.0.1", second)
    with pytest.raises(aiohttp.ClientConnectorError):
        await get(f"http://127.0.0.1:{first}/healthz")
    assert (await get(f"http://127.0.0.1:{second}/readyz"))[0] == 503
    await server.apply(admin_config(second, enabled=False))
    assert server.bound is None
    await server.stop()


async def test_a_taken_port_keeps_the_old_listener() -> None:
    server = AdminServer(GatewayPages(GatewayMetrics(), lambda: None))
    port = free_port()
    await server.apply(admin_config(port))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        holder = f"is already in use by .*pid {os.getpid()}"
        with pytest.raises(AdminBindError, match=f"admin listener: port .* {holder}"):
            await server.apply(admin_config(taken.getsockname()[1]))
    assert server.bound == ("127.0.0.1", port)
    assert (await get(f"http://127.0.0.1:{port}/healthz"))[0] == 200
    await server.stop()


async def test_head_errors_and_content_types() -> None:
    server = AdminServer(GatewayPages(GatewayMetrics(), lambda: None))
    port = free_port()
    await server.apply(admin_config(port))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.head(base + "/metrics") as r:
                assert r.status == 200 and int(r.headers["Content-Length"]) > 100
                assert await r.read() == b""
            async with session.get(base + "/healthz") as r:
                assert await r.json() == {"status": "ok"}
                assert r.headers["Cache-Control"] == "no-store"
            async with session.delete(base + "/healthz") as r:
                assert r.status == 405
                assert (await r.json())["error"]["code"] == "method_not_allowed"
            async with session.post(base + "/nope") as r:
                assert r.status == 404
                error = (await r.json())["error"]
                assert error["message"] == (
                    "The admin listener serves /metrics, /healthz and /readyz."
                )
                assert error["code"] == "unknown_url"
    finally:
        await server.stop()


async def test_hosts_that_do_not_name_the_admin_listener_are_421() -> None:
    from tests.adversarial.harness import assert_openai_error, exchange, request

    server = AdminServer(GatewayPages(GatewayMetrics(), lambda: None))
    port = free_port()
    await server.apply(admin_config(port, hosts=["metrics.lan"]))
    try:
        for host, status in (
            (f"127.0.0.1:{port}", 200),
            ("localhost", 200),
            (f"METRICS.lan.:{port}", 200),
            (f"rebind.attacker.example:{port}", 421),
            ("127.0.0.2", 421),
            ("user@127.0.0.1", 421),
        ):
            answer = await asyncio.to_thread(exchange, port, request("GET", "/healthz", host=host))
            if status == 421:
                assert_openai_error(answer, 421, code="misdirected_request")
            else:
                assert answer.status == 200, host
        two = request("GET", "/metrics", headers=[("Host", "localhost"), ("Host", "evil")])
        assert (await asyncio.to_thread(exchange, port, two)).status == 400  # h11 refuses it
        await server.apply(admin_config(port, hosts=[]))  # same bind: the names change alone
        answer = await asyncio.to_thread(
            exchange, port, request("GET", "/healthz", host="metrics.lan")
        )
        assert answer.status == 421
    finally:
        await server.stop()
