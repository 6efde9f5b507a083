"""HTTP access to one engine for the gateway's own calls: health checks and model lists.

Every call goes through the engine's `HttpSession`, which its egress profile
provides (so nothing here opens sockets around the egress), sends the engine's
`api_key` as `Authorization: Bearer`, and is bounded by `health.timeout`. Failures
become `EngineUnavailable` with a short reason that names the path, never the URL or the key.
"""

from __future__ import annotations

import json
from typing import Any

from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.egress.failure import EgressError
from flm_gateway.engines.adapter import EngineUnavailable, Reply, answered
from flm_gateway.httpio.http_client import ConnectError, HttpClientError, HttpSession


class HttpEngineClient:
    """`EngineClient` over an `HttpSession` (which carries the engine's egress)."""

    def __init__(self, config: EngineConfig, session: HttpSession) -> None:
        self._base = config.url
        self._timeout = config.health.timeout
        self._headers = [("Authorization", f"Bearer {config.api_key}")] if config.api_key else []
        self._session = session

    async def get(self, path: str) -> Reply:
        try:
            response = await self._session.get(
                self._base + path, headers=self._headers, timeout=self._timeout
            )
        except HttpClientError as exc:
            raise EngineUnavailable(f"GET {path} failed: {_describe(exc)}") from None
        try:
            body = json.loads(response.body) if response.body else None
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


def _describe(exc: HttpClientError) -> str:
    """The reason; for a direct connection that failed, without the egress wording."""
    if isinstance(exc, ConnectError) and isinstance(exc.os_error, EgressError):
        failure = exc.os_error.failure
        if failure.mode == "direct":
            return f"cannot connect ({failure.detail})"
    return str(exc)
