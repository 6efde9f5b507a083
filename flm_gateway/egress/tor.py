"""Ask a Tor client over its ControlPort whether it has bootstrapped.

An offline or still-starting Tor accepts SOCKS connections and then holds
them for its SocksTimeout (120 s) before answering "TTL expired". With a
ControlPort configured, the gateway asks `GETINFO status/bootstrap-phase`
instead and fails at once with `tor_not_bootstrapped` (503) while progress is
below 100 %. Answers are cached for a few seconds; an unreachable
ControlPort means "unknown" and never blocks a connection by itself.
Authentication: none, HashedControlPassword (`control_password`) or the
cookie file (`control_cookie`). Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PROGRESS_RE = re.compile(r"PROGRESS=(\d+)")
_SUMMARY_RE = re.compile(r'SUMMARY="([^"]*)"')


@dataclass(frozen=True)
class BootstrapStatus:
    """Tor's bootstrap progress (0-100) and its summary, e.g. 'Starting'."""

    progress: int
    summary: str

    @property
    def ready(self) -> bool:
        return self.progress >= 100


class TorControl:
    """Reads bootstrap status from one Tor ControlPort, caching answers for `ttl` seconds."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        password: str | None = None,
        cookie_file: str | None = None,
        ttl: float = 3.0,
        timeout: float = 1.0,
    ) -> None:
        self.address = address
        self._password = password
        self._cookie_file = cookie_file
        self._ttl = ttl
        self._timeout = timeout
        self._cached: tuple[float, BootstrapStatus | None] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"TorControl({self.address[0]}:{self.address[1]})"

    async def status(self, *, fresh: bool = False) -> BootstrapStatus | None:
        """The bootstrap status, or None when the ControlPort cannot tell."""
        async with self._lock:
            now = time.monotonic()
            if not fresh and self._cached and now - self._cached[0] < self._ttl:
                return self._cached[1]
            try:
                result: BootstrapStatus | None = await asyncio.wait_for(
                    self._query(), self._timeout
                )
            except (OSError, TimeoutError, ValueError) as exc:
                log.debug("tor control %s:%s unavailable: %s", *self.address, exc)
                result = None
            self._cached = (time.monotonic(), result)
            return result

    def _auth_line(self) -> bytes:
        if self._cookie_file:
            return b"AUTHENTICATE " + Path(self._cookie_file).read_bytes().hex().encode() + b"\r\n"
        if self._password is not None:
            quoted = self._password.replace("\\", "\\\\").replace('"', '\\"')
            return b'AUTHENTICATE "' + quoted.encode() + b'"\r\n'
        return b"AUTHENTICATE\r\n"

    async def _query(self) -> BootstrapStatus:
        reader, writer = await asyncio.open_connection(*self.address)
        try:
            writer.write(self._auth_line())
            await writer.drain()
            line = await reader.readline()
            if not line.startswith(b"250"):
                raise ValueError("ControlPort authentication failed")
            writer.write(b"GETINFO status/bootstrap-phase\r\n")
            await writer.drain()
            text = ""
            while True:
                line = await reader.readline()
                if not line:
                    raise ValueError("ControlPort closed the connection")
                text += line.decode(errors="replace")
                if line.startswith(b"250 ") or line[:1] in (b"4", b"5"):
                    break
            match = _PROGRESS_RE.search(text)
            if match is None:
                raise ValueError("no bootstrap progress in the ControlPort's answer")
            summary = _SUMMARY_RE.search(text)
            writer.write(b"QUIT\r\n")
            return BootstrapStatus(int(match.group(1)), summary.group(1) if summary else "")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
