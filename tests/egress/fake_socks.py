"""A scriptable SOCKS5 server for unit tests: records each CONNECT, answers as told.

On success it connects to the requested target itself (resolving names, as a real proxy
would) and relays bytes, so the client's traffic really passes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field


@dataclass
class Request:
    atyp: int
    host: str
    port: int


@dataclass
class FakeSocks:
    credentials: tuple[str, str] | None = None
    reply: int = 0
    silent: bool = False
    refuse_after_probe: bool = False
    """Once a client closed a tunnel without sending a byte (a connect probe), answer every
    later CONNECT with reply 5 (connection refused)."""
    names: dict[str, str] = field(default_factory=lambda: {"localhost": "127.0.0.1"})
    """The proxy's own name resolution (no resolver call, so tests can forbid local DNS)."""
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> FakeSocks:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def __aenter__(self) -> FakeSocks:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            await reader.read()
            return
        _, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if self.credentials is None:
            writer.write(b"\x05\x00")
        elif 2 in methods:
            writer.write(b"\x05\x02")
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            ok = (user, password) == self.credentials
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return
        else:
            writer.write(b"\x05\xff")
            return
        _, _, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = ".".join(str(b) for b in await reader.readexactly(4))
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        else:
            host = (await reader.readexactly(16)).hex()
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        self.requests.append(Request(atyp, host, port))
        if self.reply != 0:
            writer.write(bytes([5, self.reply, 0, 1, 0, 0, 0, 0, 0, 0]))
            return
        try:
            if atyp == 3 and host not in self.names:
                raise OSError("unknown name")
            up_reader, up_writer = await asyncio.open_connection(self.names.get(host, host), port)
        except OSError:
            writer.write(bytes([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]))
            return
        writer.write(bytes([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()

        sent = 0

        async def pipe_counting(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            nonlocal sent
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    sent += len(data)
                    dst.write(data)
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()

        await asyncio.gather(pipe_counting(reader, up_writer), pipe(up_reader, writer))
        up_writer.close()
        if self.refuse_after_probe and sent == 0:
            self.reply = 5
