"""An `EngineClient` that answers from a table: adapter tests without sockets."""

from __future__ import annotations

from typing import Any

from flm_gateway.engines.adapter import EngineUnavailable, Reply, answered

REFUSED = EngineUnavailable("GET failed: cannot connect (Connection refused)")


class ScriptedClient:
    """Answers GET path with the Reply (or raises the exception) in `table`; 404 otherwise."""

    def __init__(self, table: dict[str, Reply | Exception] | None = None) -> None:
        self.table = dict(table or {})
        self.paths: list[str] = []

    async def get(self, path: str) -> Reply:
        self.paths.append(path)
        answer = self.table.get(path, Reply(404, {"error": {"message": "File Not Found"}}))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def get_json(self, path: str) -> Any:
        reply = await self.get(path)
        if not reply.ok:
            raise EngineUnavailable(answered(path, reply))
        if reply.body is None:
            raise EngineUnavailable(f"GET {path}: the answer is not JSON")
        return reply.body


def down() -> ScriptedClient:
    """A client whose every request is refused."""
    client = ScriptedClient()
    client.get = _refuse  # type: ignore[method-assign]
    return client


async def _refuse(path: str) -> Reply:
    raise REFUSED
