"""HTTP access to one engine for the gateway's own calls: health checks, model lists,
fallback requests.

Every call goes through the engine's aiohttp session, which its egress profile
provides (so nothing here opens sockets around the egress), sends the engine's
`api_key` as `Authorization: Bearer`, and is bounded by `health.timeout` (fallback
requests: by the timeout they are given). Failures become `EngineUnavailable`
with a short reason that names the path, never the URL or the key.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp

from flm_gateway.config.engines import EngineConfig
from flm_gateway.engines.base import EngineUnavailable, Reply, answered


class HttpEngineClient:
    """`EngineClient` over an aiohttp session (which carries the engine's egress)."""

    def __init__(self, config: EngineConfig, session: aiohttp.ClientSession) -> None:
        self._base = config.url
        self._timeout = aiohttp.ClientTimeout(total=config.health.timeout)
        self._headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._session = session

    async def get(self, path: str) -> Reply:
        try:
            async with self._session.get(
                self._base + path, headers=self._headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise EngineUnavailable(f"GET {path} failed: {_describe(exc)}") from None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return Reply(response.status, body)

    async def get_json(self, path: str) -> Any:
        reply = await self.get(path)
        if not reply.ok:
            raise EngineUnavailable(answered(path, reply))
        if reply.body is None:
            raise EngineUnavailable(f"GET {path}: the answer is not JSON")
        return reply.body

    async def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, timeout: float
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request to the engine and read the whole response.

        Used where mitmproxy cannot forward (a fallback after a 5xx). Raises
        EngineUnavailable when the engine cannot be reached or times out.
        """
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=aiohttp.ClientTimeout(total=timeout),
                auto_decompress=False,
            ) as response:
                content = await response.read()
                headers_out = [
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers
                ]
                return response.status, headers_out, content
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EngineUnavailable(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        reason = os.strerror(error.errno) if error.errno else str(error)
        return f"cannot connect ({reason.lower()})"
    return exc.__class__.__name__ + (f": {exc}" if str(exc) else "")
