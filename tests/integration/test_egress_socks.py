"""Egress through real SOCKS5 servers (microsocks, dante), end to end through `flm-gateway`.

microsocks binds its outgoing connections to 127.0.0.2 (`-b`), so a request the target
sees from 127.0.0.2 went through the proxy, one from 127.0.0.1 went direct.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.egress.fake_socks import FakeSocks
from tests.integration.egress_support import (
    DANTE_PASSWORD,
    DANTE_USER,
    SSE_EVENTS,
    SSE_GAP,
    Target,
    blackhole,
    danted,
    free_port,
    make_ca,
    microsocks,
    trust_ca_env,
)
from tests.support.gateway_process import GatewayProcess, run_gateway

PROXIED = "127.0.0.2"
SOCKS_USER, SOCKS_PASSWORD = "gwuser", "gw-pass-42"


@dataclass
class Socks:
    plain: int
    authed: int
    closed: int
    silent: int


@pytest.fixture
def socks() -> Iterator[Socks]:
    plain, authed = free_port(), free_port()
    with ExitStack() as stack:
        stack.enter_context(microsocks(plain))
        stack.enter_context(microsocks(authed, user=SOCKS_USER, password=SOCKS_PASSWORD))
        silent = stack.enter_context(blackhole())
        yield Socks(plain, authed, free_port(), silent)


@pytest.fixture
async def targets() -> AsyncIterator[dict[str, Target]]:
    started = {name: await Target().start() for name in ("a", "b", "c")}
    yield started
    for target in started.values():
        await target.stop()


async def chat(gateway: GatewayProcess, model: str, **body: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            gateway.url + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body},
        )


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    return error


async def test_socks5_json_sse_health_and_models_go_through_microsocks(
    tmp_path: Path, socks: Socks, targets: dict[str, Target]
) -> None:
    config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  bastion: {{mode: socks5, url: "socks5://127.0.0.1:{socks.plain}", fail: closed}}
engines:
  - {{name: far, kind: openai, url: "{targets["a"].url}", egress: bastion}}
routes:
  - {{model: m, engine: far}}
"""
    with run_gateway(config, tmp_path) as gateway:
        response = await chat(gateway, "m")
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "hi"

        async with httpx.AsyncClient(timeout=30) as client:
            models = await client.get(gateway.url + "/v1/models")
            assert "m" in {entry["id"] for entry in models.json()["data"]}
            started = time.monotonic()
            arrivals: list[float] = []
            async with client.stream(
                "POST",
                gateway.url + "/v1/chat/completions",
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            ) as stream:
                assert stream.status_code == 200
                async for line in stream.aiter_lines():
                    if line.startswith("data: {"):
                        arrivals.append(time.monotonic() - started)
        assert len(arrivals) == SSE_EVENTS
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        # Paced as sent (SSE_GAP apart), not buffered to the end.
        assert min(gaps) > SSE_GAP * 0.5, arrivals
        assert arrivals[0] < SSE_GAP * (SSE_EVENTS - 1) * 0.5, arrivals
    # Health checks, model lists and requests: every one came through the proxy.
    assert {path for _, path in targets["a"].requests} >= {"/v1/models", "/v1/chat/completions"}
    assert targets["a"].peers == {PROXIED}


async def test_socks5_credentials_from_env_and_a_rejected_password(
    tmp_path: Path, socks: Socks, targets: dict[str, Target]
) -> None:
    config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  authed: {{mode: socks5, url: "socks5://127.0.0.1:{socks.authed}",
            username: {SOCKS_USER}, password: "${{SOCKS_PW}}"}}
  wrongpw: {{mode: socks5, url: "socks5://127.0.0.1:{socks.authed}",
             username: {SOCKS_USER}, password: "not-the-password"}}
  nocreds: {{mode: socks5, url: "socks5://127.0.0.1:{socks.authed}"}}
engines:
  - {{name: good, url: "{targets["a"].url}", egress: authed}}
  - {{name: bad, url: "{targets["b"].url}", egress: wrongpw}}
  - {{name: anon, url: "{targets["b"].url}", egress: nocreds}}
routes:
  - {{model: good, engine: good}}
  - {{model: bad, engine: bad}}
  - {{model: anon, engine: anon}}
"""
    with run_gateway(config, tmp_path, env={"SOCKS_PW": SOCKS_PASSWORD}) as gateway:
        assert (await chat(gateway, "good")).status_code == 200
        for model, profile in (("bad", "wrongpw"), ("anon", "nocreds")):
            response = await chat(gateway, model)
            assert response.status_code == 502, response.text
            error = error_of(response)
            assert error["code"] == "egress_proxy_auth_rejected"
            assert f"egress '{profile}' (socks5)" in str(error["message"])
        log = gateway.log
    assert targets["a"].peers == {PROXIED}
    assert targets["b"].connections == 0
    assert SOCKS_PASSWORD not in log and "not-the-password" not in log


async def test_fail_closed_errors_are_clear_and_nothing_goes_direct(
    tmp_path: Path, socks: Socks, targets: dict[str, Target]
) -> None:
    refused_port = free_port()
    config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  default: down
  down: {{mode: socks5, url: "socks5://127.0.0.1:{socks.closed}"}}
  bastion: {{mode: socks5, url: "socks5://127.0.0.1:{socks.plain}"}}
  silent: {{mode: socks5, url: "socks5://127.0.0.1:{socks.silent}", connect_timeout: 1s}}
engines:
  - {{name: dead-proxy, url: "{targets["b"].url}"}}
  - {{name: refusing, url: "http://127.0.0.1:{refused_port}", egress: bastion}}
  - {{name: hanging, url: "{targets["c"].url}", egress: silent}}
routes:
  - {{model: dead, engine: dead-proxy}}
  - {{model: refused, engine: refusing}}
  - {{model: hang, engine: hanging}}
"""
    with run_gateway(config, tmp_path) as gateway:
        started = time.monotonic()
        response = await chat(gateway, "dead")
        assert time.monotonic() - started < 2
        assert response.status_code == 503, response.text
        error = error_of(response)
        assert error["code"] == "egress_proxy_unreachable"
        assert "egress 'down' (socks5) failed: the proxy is unreachable" in str(error["message"])

        response = await chat(gateway, "refused")
        assert response.status_code == 502, response.text
        assert error_of(response)["code"] == "egress_target_refused"

        started = time.monotonic()
        response = await chat(gateway, "hang")
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert error_of(response)["code"] == "egress_timeout"
        assert 0.9 < elapsed < 3.0, elapsed
        log = gateway.log
    # Not one connection reached the targets directly, health checks included.
    assert targets["b"].connections == 0
    assert targets["c"].connections == 0
    assert "proxy_unreachable" in log and "127.0.0.1:" + str(socks.closed) in log


async def test_fail_open_falls_back_to_direct_and_logs_it(
    tmp_path: Path, socks: Socks, targets: dict[str, Target]
) -> None:
    config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  flaky: {{mode: socks5, url: "socks5://127.0.0.1:{socks.closed}", fail: open}}
engines:
  - {{name: near, url: "{targets["a"].url}", egress: flaky}}
routes:
  - {{model: m, engine: near}}
"""
    with run_gateway(config, tmp_path) as gateway:
        response = await chat(gateway, "m")
        assert response.status_code == 200, response.text
        log = gateway.log
    assert targets["a"].peers == {"127.0.0.1"}
    assert "falling back to a direct connection (fail: open)" in log
    assert "egress fallback: profile=flaky mode=socks5" in log


async def test_https_engine_behind_socks5_is_verified_with_its_real_name(
    tmp_path: Path, socks: Socks
) -> None:
    ca_pem, leaves = make_ca(tmp_path, ["localhost", "other.test"])
    good_context = __import__("ssl").SSLContext(__import__("ssl").PROTOCOL_TLS_SERVER)
    good_context.load_cert_chain(*leaves["localhost"])
    bad_context = __import__("ssl").SSLContext(__import__("ssl").PROTOCOL_TLS_SERVER)
    bad_context.load_cert_chain(*leaves["other.test"])
    good = await Target(ssl_context=good_context, host="localhost").start()
    bad = await Target(ssl_context=bad_context, host="localhost").start()
    config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  bastion: {{mode: socks5, url: "socks5://127.0.0.1:{socks.plain}"}}
engines:
  - {{name: tls, url: "{good.url}", egress: bastion}}
  - {{name: impostor, url: "{bad.url}", egress: bastion}}
routes:
  - {{model: tls, engine: tls}}
  - {{model: impostor, engine: impostor}}
"""
    try:
        with run_gateway(config, tmp_path, env=trust_ca_env(tmp_path, ca_pem)) as gateway:
            response = await chat(gateway, "tls")
            assert response.status_code == 200, response.text
            response = await chat(gateway, "impostor")
            assert response.status_code == 502, response.text
    finally:
        await good.stop()
        await bad.stop()
    # The engine saw the real name as SNI, over a connection the proxy made.
    assert good.sni and set(good.sni) == {"localhost"}
    assert good.peers == {PROXIED}
    assert ("127.0.0.1", "/v1/chat/completions") not in good.requests
    # A certificate for another name is refused: no HTTP request reached the impostor.
    assert bad.sni and not bad.requests


async def test_dante_username_auth(tmp_path: Path, targets: dict[str, Target]) -> None:
    port = free_port()
    with danted(port, tmp_path):
        config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  dante: {{mode: socks5, url: "socks5://127.0.0.1:{port}",
           username: {DANTE_USER}, password: "${{DANTE_PW}}"}}
  dante-wrong: {{mode: socks5, url: "socks5://127.0.0.1:{port}",
                 username: {DANTE_USER}, password: wrong}}
engines:
  - {{name: d, url: "{targets["a"].url}", egress: dante}}
  - {{name: w, url: "{targets["b"].url}", egress: dante-wrong}}
routes:
  - {{model: d, engine: d}}
  - {{model: w, engine: w}}
"""
        with run_gateway(config, tmp_path, env={"DANTE_PW": DANTE_PASSWORD}) as gateway:
            response = await chat(gateway, "d")
            assert response.status_code == 200, response.text
            response = await chat(gateway, "w")
            assert response.status_code == 502, response.text
            assert error_of(response)["code"] == "egress_proxy_auth_rejected"
    assert targets["a"].requests and targets["b"].connections == 0


async def test_nothing_is_resolved_locally(
    tmp_path: Path, socks: Socks, targets: dict[str, Target]
) -> None:
    """An unresolvable name goes to the proxy as a name: the proxy answers, no local lookup."""
    config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  bastion: {{mode: socks5, url: "socks5://127.0.0.1:{socks.plain}", connect_timeout: 3s}}
engines:
  - {{name: hidden, url: "http://engine.invalid:{targets["a"].port}", egress: bastion}}
routes:
  - {{model: m, engine: hidden}}
"""
    with run_gateway(config, tmp_path) as gateway:
        response = await chat(gateway, "m")
        # microsocks's own lookup fails (502) or outlasts connect_timeout (504, when its
        # resolver waits for an unreachable DNS server): an egress answer either way.
        assert response.status_code in (502, 504), response.text
        error = error_of(response)
        # microsocks could not resolve it: a SOCKS reply, not a local resolver error.
        assert str(error["code"]).startswith("egress_"), error
        log = gateway.log
    assert "cannot resolve" not in log
    assert json.dumps(error).count("engine.invalid") == 0
    await asyncio.sleep(0)


async def test_a_failure_in_the_bridge_after_the_probe_is_an_openai_error(
    tmp_path: Path, targets: dict[str, Target]
) -> None:
    """The probe gets through, then the proxy refuses mitmproxy's own connection: the
    bridge's marked CONNECT answer becomes the egress error, not mitmproxy's HTML page."""
    async with FakeSocks(refuse_after_probe=True) as proxy:
        config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  fickle: {{mode: socks5, url: "socks5://127.0.0.1:{proxy.port}"}}
engines:
  - {{name: e, url: "http://localhost:{targets["a"].port}", egress: fickle}}
routes:
  - {{model: m, engine: e}}
"""
        with run_gateway(config, tmp_path) as gateway:
            response = await chat(gateway, "m")
        assert response.status_code == 502, response.text
        assert response.headers["content-type"] == "application/json"
        error = error_of(response)
        assert error["code"] == "egress_target_refused"
        # From the bridge (mitm_errors), not from routing's probe ("No engine is reachable...").
        assert str(error["message"]).startswith("egress 'fickle' (socks5) failed")
        assert proxy.reply == 5 and len(proxy.requests) >= 2
    assert ("127.0.0.1", "/v1/chat/completions") not in targets["a"].requests
