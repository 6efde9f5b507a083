"""`Gateway.swap` in process: rollback on any failure, old engine sessions kept for in-flight."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from flm_gateway.addons.model_routing import Routing
from flm_gateway.app.gateway import Gateway, StartupError
from flm_gateway.app.hot_reload import ReloadError
from flm_gateway.config import ConfigError, LoadedConfig, load_config
from flm_gateway.config.loader import problem_at
from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.runtime import Runtime
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import free_port

CONFIG = """\
server: {{state_dir: "{state}"}}
admin: {{enabled: false}}
listeners:
{listeners}
engines: [{{name: alpha, kind: vllm, url: "{url}"}}]
"""


class Refuser(Unconfigured):
    """An addon that refuses configs whose listeners include one named `refuse`."""

    def prepare(self, runtime: Runtime) -> None:
        loaded = runtime.loaded
        problems = [
            problem_at(loaded, ("listeners", index, "name"), "refused by the test addon")
            for index, listener in enumerate(loaded.config.listeners)
            if listener.name == "refuse"
        ]
        if problems:
            raise ConfigError(problems)


def write(tmp_path: Path, url: str, *listeners: tuple[str, int]) -> LoadedConfig:
    lines = "\n".join(f'  - {{name: {n}, bind: "127.0.0.1:{p}"}}' for n, p in listeners)
    path = tmp_path / "flm.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state", listeners=lines, url=url))
    return load_config(path)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Gateway, FakeEngine, int]]:
    async with FakeEngine("vllm", ["tiny-a"]) as engine:
        port = free_port()
        gateway = Gateway(write(tmp_path, engine.url, ("main", port)))
        gateway.addons.append(Refuser())
        await gateway.start()
        try:
            yield gateway, engine, port
        finally:
            await gateway.stop()


def routing(gateway: Gateway) -> Routing:
    return next(a for a in gateway.addons if isinstance(a, Routing))


async def can_connect(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def test_an_addon_refusing_rolls_every_addon_back(
    running: tuple[Gateway, FakeEngine, int], tmp_path: Path
) -> None:
    gateway, engine, port = running
    old = gateway.runtime
    extra = free_port()
    with pytest.raises(ReloadError, match=r"flm.yaml:\d+:\d+: listeners\[1\].name: refused"):
        await gateway.swap(write(tmp_path, engine.url, ("main", port), ("refuse", extra)))
    assert gateway.runtime is old and old is not None
    assert routing(gateway)._directory is old.directory  # prepared, never committed
    assert not await can_connect(extra)
    assert await can_connect(port)


async def test_swap_keeps_old_sessions_until_in_flight_requests_end(
    running: tuple[Gateway, FakeEngine, int], tmp_path: Path
) -> None:
    gateway, engine, port = running
    old = gateway.runtime
    assert old is not None
    await old.directory.settled(5)
    flow = tflow.tflow()
    gateway.inflight.requestheaders(flow)
    extra = free_port()
    await gateway.swap(write(tmp_path, engine.url, ("main", port), ("second", extra)))
    assert gateway.runtime is not None and gateway.runtime is not old
    assert routing(gateway)._directory is gateway.runtime.directory
    assert await can_connect(extra)
    new_engine = gateway.runtime.directory.get("alpha") if gateway.runtime else None
    assert new_engine is not None and new_engine.healthy  # health carried over
    await asyncio.sleep(0.05)
    assert not any(s.closed for s in old.directory._sessions)
    gateway.inflight.response(flow)
    for _ in range(50):
        await asyncio.sleep(0.02)
        if all(s.closed for s in old.directory._sessions):
            break
    assert all(s.closed for s in old.directory._sessions)


async def test_a_listener_bound_before_the_commit_refuses_connections(
    running: tuple[Gateway, FakeEngine, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between binding a reload's new listeners and committing it, a connection on a new
    TLS listener is refused: it is not served plain HTTP once the commit lands."""
    gateway, engine, port = running
    secure = free_port()
    loaded = write(tmp_path, engine.url, ("main", port), ("secure", secure))
    text = loaded.source.replace(
        f'{{name: secure, bind: "127.0.0.1:{secure}"}}',
        f'{{name: secure, bind: "127.0.0.1:{secure}", tls: {{mode: dev-selfsigned}}}}',
    )
    assert text != loaded.source
    assert loaded.path is not None
    loaded.path.write_text(text)
    loaded = load_config(loaded.path)
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    update_admin = gateway._update_admin

    async def connect_in_the_window(new: LoadedConfig, *, starting: bool = False) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", secure)
        writer.write(b"GET /v1/models HTTP/1.1\r\n")  # the layer is chosen on these bytes
        await writer.drain()
        await asyncio.sleep(0.2)
        opened.append((reader, writer))
        await update_admin(new, starting=starting)

    monkeypatch.setattr(gateway, "_update_admin", connect_in_the_window)
    await gateway.swap(loaded)
    reader, writer = opened[0]
    with contextlib.suppress(ConnectionError):
        writer.write(b"Host: 127.0.0.1\r\n\r\n")  # the rest, after the commit
        await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(4096), 5)
    except ConnectionError:
        answer = b""
    writer.close()
    assert answer == b""  # closed, never answered in plain HTTP


async def test_a_certificate_that_cannot_be_made_at_start_stops_the_start(tmp_path: Path) -> None:
    """Commit builds a new listener's certificate; when the disk refuses it at start, the
    gateway does not start (as before prepare/commit), rather than serve a listener that
    refuses every handshake."""
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    (state / "tls" / "listeners").write_text("not a directory\n")  # refused even as root
    port = free_port()
    path = tmp_path / "flm.yaml"
    path.write_text(
        CONFIG.format(
            state=state,
            listeners=f'  - {{name: dev, bind: "127.0.0.1:{port}", tls: {{mode: dev-selfsigned}}}}',
            url="http://127.0.0.1:9",
        )
    )
    gateway = Gateway(load_config(path))
    try:
        with pytest.raises(
            StartupError,
            match=r"flm.yaml:\d+:\d+: listeners\[0\]\.tls\.mode: dev-selfsigned: no certificate",
        ):
            await gateway.start()
        assert not await can_connect(port)
    finally:
        if gateway.started:
            gateway.master.shutdown()
            await gateway.master.addons.get("proxyserver").servers.update([])
        gateway.state.close()
