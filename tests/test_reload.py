from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from flm_gateway.app.hot_reload import FileStamp, Reloader, ReloadError, restart_required
from flm_gateway.config import LoadedConfig, load_config
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.state.process import RELOAD_STATUS_FILE

CONFIG = """\
server: {{state_dir: ./state}}
reload: {{poll_interval: 0.02, debounce: 0.25}}
listeners:
  - {{name: main, bind: "127.0.0.1:{port}"}}
"""


class FakeGateway:
    def __init__(self, loaded: LoadedConfig, fail: str | None = None) -> None:
        self.loaded = loaded
        self.swapped: list[LoadedConfig] = []
        self.fail = fail

    async def swap(self, loaded: LoadedConfig) -> None:
        if self.fail:
            raise ReloadError([self.fail])
        self.swapped.append(loaded)
        self.loaded = loaded


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, str]]] = []

    def record(self, event: str, outcome: str, details: Mapping[str, str]) -> None:
        self.events.append((event, outcome, dict(details)))


Setup = tuple[Path, FakeGateway, Reloader, GatewayMetrics, Audit]


def setup(tmp_path: Path, fail: str | None = None) -> Setup:
    path = tmp_path / "flm.yaml"
    path.write_text(CONFIG.format(port=8088))
    gateway = FakeGateway(load_config(path), fail)
    metrics, audit = GatewayMetrics(), Audit()
    return path, gateway, Reloader(gateway, metrics, audit), metrics, audit


def reload_count(metrics: GatewayMetrics, result: str) -> float:
    return metrics.reloads.labels(result).value


async def test_a_valid_file_is_swapped_in(tmp_path: Path) -> None:
    path, gateway, reloader, metrics, audit = setup(tmp_path)
    path.write_text(CONFIG.format(port=8089))
    outcome = await reloader.reload("SIGHUP")
    assert outcome.ok and outcome.generation == 2
    assert gateway.loaded.config.listeners[0].bind == ("127.0.0.1", 8089)
    assert reload_count(metrics, "ok") == 1
    assert audit.events == [("config.reload", "ok", {"file": str(path), "trigger": "SIGHUP"})]
    status = json.loads((tmp_path / "state" / RELOAD_STATUS_FILE).read_text())
    assert status["ok"] and status["generation"] == 2 and status["pid"] == os.getpid()


async def test_an_invalid_file_keeps_the_old_config_and_reports_positions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, gateway, reloader, metrics, audit = setup(tmp_path)
    path.write_text(CONFIG.format(port=8088) + "bogus: 1\n")
    with caplog.at_level(logging.ERROR, "flm_gateway.reload"):
        outcome = await reloader.reload("file change")
    assert not outcome.ok and gateway.swapped == []
    assert len(outcome.problems) == 1
    assert outcome.problems[0].startswith(f"{path}:5:1: bogus: unknown key 'bogus'")
    assert any(f"{path}:5:1" in r.getMessage() for r in caplog.records)
    assert reload_count(metrics, "failed") == 1
    assert audit.events[0][1] == "failed"
    status = json.loads((tmp_path / "state" / RELOAD_STATUS_FILE).read_text())
    assert not status["ok"] and status["generation"] == 1


async def test_state_dir_changes_need_a_restart(tmp_path: Path) -> None:
    path, gateway, reloader, _, _ = setup(tmp_path)
    path.write_text(CONFIG.format(port=8088).replace("./state", "./other"))
    outcome = await reloader.reload("SIGHUP")
    assert not outcome.ok and "server.state_dir" in outcome.problems[0]
    assert gateway.swapped == []


async def test_a_failed_swap_is_reported(tmp_path: Path) -> None:
    path, _, reloader, metrics, _ = setup(tmp_path, fail="listeners: port taken")
    path.write_text(CONFIG.format(port=8089))
    outcome = await reloader.reload("SIGHUP")
    assert not outcome.ok and outcome.problems == ["listeners: port taken"]
    assert reload_count(metrics, "failed") == 1


async def test_rapid_edits_cause_one_reload(tmp_path: Path) -> None:
    path, gateway, reloader, _, _ = setup(tmp_path)
    reloader.start()
    try:
        for port in range(9001, 9008):
            path.write_text(CONFIG.format(port=port))
            await asyncio.sleep(0.04)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if gateway.swapped:
                break
        await asyncio.sleep(0.4)
    finally:
        await reloader.stop()
    assert len(gateway.swapped) == 1
    assert gateway.loaded.config.listeners[0].bind == ("127.0.0.1", 9007)


async def test_touch_without_change_and_repeated_bad_content_do_nothing(tmp_path: Path) -> None:
    path, gateway, reloader, metrics, _ = setup(tmp_path)
    reloader.start()
    try:
        os.utime(path, (1, 1))
        await asyncio.sleep(0.4)
        assert reloader.last is None
        path.write_text("listeners: nope\n")
        await asyncio.sleep(0.4)
        os.utime(path, (2, 2))  # same broken content again: not retried
        await asyncio.sleep(0.4)
    finally:
        await reloader.stop()
    assert reload_count(metrics, "failed") == 1
    assert gateway.swapped == []


async def test_triggers_during_a_reload_merge_into_one(tmp_path: Path) -> None:
    _, _, reloader, metrics, _ = setup(tmp_path)
    for _ in range(5):
        reloader.trigger("SIGHUP")
    await asyncio.sleep(0.3)
    assert 1 <= reload_count(metrics, "ok") <= 2


def test_file_stamp_sees_replacement(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("a")
    before = FileStamp.of(path)
    replacement = tmp_path / "g"
    replacement.write_text("a")
    os.replace(replacement, path)
    assert FileStamp.of(path) != before
    assert FileStamp.of(tmp_path / "missing") is None


def test_restart_required_only_for_state_dir(tmp_path: Path) -> None:
    path = tmp_path / "flm.yaml"
    path.write_text(CONFIG.format(port=1))
    first = load_config(path)
    path.write_text(CONFIG.format(port=2))
    assert restart_required(first, load_config(path)) == []
    path.write_text(CONFIG.format(port=1).replace("./state", "./elsewhere"))
    assert restart_required(first, load_config(path)) == [
        f"{path}:1:21: server.state_dir: the state directory cannot change while serving "
        f"(serving from {tmp_path / 'state'}, the file now says {tmp_path / 'elsewhere'}); "
        "restart the gateway to use the new one"
    ]


def test_a_change_of_workers_needs_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "flm.yaml"
    redis = "state: {backend: redis}\n"
    path.write_text(CONFIG.format(port=1) + redis)
    first = load_config(path)
    path.write_text(CONFIG.format(port=1).replace("./state}", "./state, workers: 2}") + redis)
    [problem] = restart_required(first, load_config(path))
    assert problem.startswith(f"{path}:1:39: server.workers: the number of worker processes")
    assert "serving with 1, the file now says 2" in problem
