"""TorControl: bootstrap status from a ControlPort, auth, caching; unreachable = unknown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flm_gateway.egress.tor import TorControl
from tests.support.gateway_process import free_port


class FakeControl:
    def __init__(self, progress: int, expected_auth: bytes) -> None:
        self.progress = progress
        self.expected_auth = expected_auth
        self.auth_lines: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.auth_lines.append(line)
        if line != self.expected_auth:
            writer.write(b"515 Authentication failed\r\n")
            writer.close()
            return
        writer.write(b"250 OK\r\n")
        await reader.readline()
        writer.write(
            b"250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS="
            + str(self.progress).encode()
            + b' TAG=starting SUMMARY="Starting"\r\n250 OK\r\n'
        )
        await writer.drain()
        await reader.readline()
        writer.close()


@pytest.fixture
async def control() -> AsyncIterator[FakeControl]:
    fake = FakeControl(0, b'AUTHENTICATE "pa\\"ss"\r\n')
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    yield fake
    server.close()


async def test_reads_progress_with_password_and_caches(control: FakeControl) -> None:
    tor = TorControl(("127.0.0.1", control.port), password='pa"ss', ttl=60)
    status = await tor.status()
    assert status is not None and status.progress == 0 and not status.ready
    assert status.summary == "Starting"
    control.progress = 100
    assert (await tor.status()) == status  # cached
    fresh = await tor.status(fresh=True)
    assert fresh is not None and fresh.ready
    assert control.auth_lines[0] == b'AUTHENTICATE "pa\\"ss"\r\n'
    assert "pa" not in repr(tor)


async def test_wrong_password_or_no_control_port_means_unknown(control: FakeControl) -> None:
    assert await TorControl(("127.0.0.1", control.port), password="nope").status() is None
    assert await TorControl(("127.0.0.1", free_port())).status() is None


async def test_cookie_authentication(tmp_path: Path) -> None:
    cookie = tmp_path / "control_auth_cookie"
    cookie.write_bytes(b"\x01\x02")
    tor = TorControl(("127.0.0.1", 9), cookie_file=str(cookie))
    assert tor._auth_line() == b"AUTHENTICATE 0102\r\n"
