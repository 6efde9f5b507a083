"""Workers share a listener: with `mitm_reuse_port` installed two mitmproxy masters can bind
the same port, which without it the second cannot."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.proxy import mode_servers

from flm_gateway.proxy import mitm_reuse_port
from flm_gateway.proxy.mitm_listeners import spec_for
from tests.support.gateway_process import free_port


class _Manager:
    connections: dict[object, object] = {}

    def register_connection(self, *args: object) -> None: ...

    def unregister_connection(self, *args: object) -> None: ...


async def _listen(port: int) -> list[object]:
    instance = mode_servers.ServerInstance.make(spec_for(("127.0.0.1", port)), _Manager())
    assert isinstance(instance, mode_servers.ReverseInstance)
    return list(await instance.listen("127.0.0.1", port))


async def test_the_patched_listen_shares_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    original = mode_servers.ReverseInstance.listen
    first = await _listen(port)
    try:
        with pytest.raises(OSError):
            await _listen(port)  # mitmproxy's own: the port is taken
    finally:
        for server in first:
            server.close()  # type: ignore[attr-defined]
    monkeypatch.setattr(mode_servers.ReverseInstance, "listen", original)
    mitm_reuse_port.install()
    servers = [*await _listen(port), *await _listen(port)]
    try:
        assert len(servers) == 2
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    finally:
        for server in servers:
            server.close()  # type: ignore[attr-defined]
