from __future__ import annotations

import time
from pathlib import Path

from mitmproxy.test import taddons

from flm_gateway.addons.request_logger import RequestLog
from flm_gateway.config import parse_config
from flm_gateway.config.loader import LoadedConfig
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.proxy.flow_meta import API_KIND
from flm_gateway.requestlog.log_table import RequestLogStore
from flm_gateway.requestlog.query import LogFilter, search
from tests.ops_flows import routed_flow
from tests.support.flows import configure

CONFIG = """
listeners: [{name: main, bind: "127.0.0.1:8088"}]
request_log: {enabled: %s, retention: 1d}
"""


def loaded(state_dir: Path, enabled: bool = True) -> LoadedConfig:
    text = CONFIG % ("true" if enabled else "false")
    config, _ = parse_config(text, environ={})
    return LoadedConfig(config=config, path=None, state_dir=state_dir, source=text)


def logged(state_dir: Path) -> list[dict[str, object]]:
    store = RequestLogStore.open(state_dir / "state.db", create=False)
    try:
        return search(store, LogFilter(), 100)
    finally:
        store.close()


async def test_one_record_per_request(tmp_path: Path) -> None:
    addon = RequestLog(GatewayMetrics())
    with taddons.context(addon):
        configure(loaded(tmp_path), addon)
        await addon.running()
        now = time.time()
        flow = routed_flow(started=now, ended=now + 0.5, flm__auth__key_id="k1")
        addon.response(flow)
        addon.error(flow)  # counted once
        health = routed_flow(engine=None)
        API_KIND.set(health, "health")
        addon.response(health)
        await addon.done()
    [row] = logged(tmp_path)
    assert row["request_id"] == "req-1"
    assert row["listener"] == "main"
    assert row["client_ip"] == "192.0.2.7"
    assert row["key_id"] == "k1"
    assert row["model"] == "m1" and row["engine"] == "e1" and row["status"] == 200
    assert row["latency_ms"] == 500.0
    assert row["path"] == "/v1/chat/completions"


async def test_disabled_writes_nothing(tmp_path: Path) -> None:
    addon = RequestLog()
    with taddons.context(addon):
        configure(loaded(tmp_path, enabled=False), addon)
        await addon.running()
        addon.response(routed_flow())
        await addon.done()
    assert logged(tmp_path) == []


async def test_reload_changes_retention_and_enabled(tmp_path: Path) -> None:
    addon = RequestLog()
    configure(loaded(tmp_path), addon)
    writer = addon.writer
    configure(loaded(tmp_path, enabled=False), addon)
    assert addon.writer is writer
    assert writer is not None and writer.retention == 86400
