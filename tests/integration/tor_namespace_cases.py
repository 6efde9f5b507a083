"""Tor cases that only make sense inside a private network namespace.

Not collected by a plain `pytest` run (the file name does not start with test_):
`test_egress_tor.py` runs this file under `unshare -n` with loopback up, so nothing
can leave the machine. Tor never bootstraps there: it rejects private targets at once
(SOCKS 0x01), holds named targets for its SocksTimeout (120 s, which the gateway never
waits for) and reports bootstrap 0 % on its ControlPort.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.egress_support import Target, free_port, tor
from tests.support.gateway_process import run_gateway

ONION = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    started = await Target().start()
    yield started
    await started.stop()


async def post(client: httpx.AsyncClient, url: str, model: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    return response, time.monotonic() - started


async def test_tor_fails_closed_with_clear_errors_and_fails_open_when_asked(
    tmp_path: Path, target: Target
) -> None:
    other = await Target().start()
    socks, control, closed = free_port(), free_port(), free_port()
    config = f"""
server: {{state_dir: "{{state_dir}}"}}
listeners: [{{name: main, bind: "127.0.0.1:{{port}}"}}]
egress:
  onion: {{mode: tor, socks: "127.0.0.1:{socks}", connect_timeout: 2s}}
  onion-ctl: {{mode: tor, socks: "127.0.0.1:{socks}", control: "127.0.0.1:{control}"}}
  tor-down: {{mode: tor, socks: "127.0.0.1:{closed}"}}
  tor-open: {{mode: tor, socks: "127.0.0.1:{socks}", fail: open, connect_timeout: 2s}}
engines:
  - {{name: private, url: "{target.url}", egress: onion}}
  - {{name: named, url: "http://engine.example:{target.port}", egress: onion}}
  - {{name: named-ctl, url: "http://engine.example:{target.port}", egress: onion-ctl}}
  - {{name: hidden, url: "http://{ONION}", egress: onion-ctl}}
  - {{name: down, url: "{target.url}", egress: tor-down}}
  - {{name: open, url: "{other.url}", egress: tor-open}}
routes:
  - {{model: private, engine: private}}
  - {{model: named, engine: named}}
  - {{model: named-ctl, engine: named-ctl}}
  - {{model: hidden, engine: hidden}}
  - {{model: down, engine: down}}
  - {{model: open, engine: open}}
"""
    try:
        with (
            tor(tmp_path, socks, control),
            run_gateway(config, tmp_path) as gateway,
        ):
            async with httpx.AsyncClient(timeout=30) as client:
                expectations = [
                    # Tor refuses private addresses itself: a SOCKS general failure.
                    ("private", 502, "egress_proxy_error", 4.0),
                    # A name is held by an offline Tor; the gateway gives up at 2 s.
                    ("named", 504, "egress_timeout", 4.0),
                    # With a ControlPort the gateway knows Tor is not ready: 503 at once.
                    ("named-ctl", 503, "egress_tor_not_bootstrapped", 1.5),
                    ("hidden", 503, "egress_tor_not_bootstrapped", 1.5),
                    ("down", 503, "egress_proxy_unreachable", 1.5),
                ]
                for model, status, code, limit in expectations:
                    response, elapsed = await post(client, gateway.url, model)
                    assert response.status_code == status, (model, response.text)
                    error = response.json()["error"]
                    assert error["code"] == code, (model, error)
                    assert "(tor) failed" in error["message"], error
                    assert elapsed < limit, (model, elapsed)
                response, _ = await post(client, gateway.url, "open")
                assert response.status_code == 200, response.text
            log = gateway.log
    finally:
        await other.stop()
    assert target.connections == 0, "a fail-closed Tor engine was reached directly"
    assert other.peers == {"127.0.0.1"}
    assert "egress fallback: profile=tor-open mode=tor" in log
    assert "tor_not_bootstrapped" in log
