"""Ollama's model-management ("admin") endpoints, which a gateway should block by default.

From Ollama's docs/api.md: POST /api/pull, /api/push and /api/create stream NDJSON status
objects ending in {"status": "success"} (only that one with "stream": false);
DELETE /api/delete and POST /api/copy answer 200 with an empty body, or 404 with
{"error": "model '...' not found"}; HEAD /api/blobs/{digest} answers 404 (no blob) and
POST /api/blobs/{digest} 201. They act on the fake's model list (pull, create and copy
add a model, delete removes it) so a test sees the effect of a call that got through;
every call is also in `FakeEngine.admin_calls`.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from aiohttp import web

from tests.support.fakes.generate import FAULT_KEY, NDJSON, ndjson, write_stream

if TYPE_CHECKING:
    from tests.support.fakes.ollama import OllamaKind

JSONDict = dict[str, object]


class OllamaAdmin:
    """The admin handlers of one Ollama fake."""

    ADMIN_PATHS = frozenset({"/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy"})

    def __init__(self, kind: OllamaKind) -> None:
        self.kind = kind

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/pull", self.pull),
            web.post("/api/push", self.push),
            web.post("/api/create", self.create),
            web.delete("/api/delete", self.delete),
            web.post("/api/copy", self.copy),
            web.head("/api/blobs/{digest}", self.blob_exists),
            web.post("/api/blobs/{digest}", self.blob_create),
        ]

    @classmethod
    def is_admin(cls, path: str) -> bool:
        return path in cls.ADMIN_PATHS or path.startswith("/api/blobs/")

    async def progress(self, request: web.Request, statuses: list[JSONDict]) -> web.StreamResponse:
        body = self.kind.body(request) or {}
        if body.get("stream", True) is False:
            return web.json_response(statuses[-1])
        return await write_stream(
            request,
            self.kind.state,
            request[FAULT_KEY],
            [ndjson(s) for s in statuses],
            content_type=NDJSON,
            tail=b"",
            error_tail=ndjson({"error": "injected failure"}),
        )

    async def pull(self, request: web.Request) -> web.StreamResponse:
        name = str((self.kind.body(request) or {}).get("model") or "")
        if not name:
            return self.kind.native_error(400, "model is required")
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        self.kind.add_model(name)
        return await self.progress(
            request,
            [
                {"status": "pulling manifest"},
                {
                    "status": f"pulling {digest[7:19]}",
                    "digest": digest,
                    "total": 1000,
                    "completed": 1000,
                },
                {"status": "verifying sha256 digest"},
                {"status": "writing manifest"},
                {"status": "success"},
            ],
        )

    async def push(self, request: web.Request) -> web.StreamResponse:
        name = str((self.kind.body(request) or {}).get("model") or "")
        if self.kind.find(name) is None:
            return self.kind.native_error(404, f"model '{name}' not found")
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        return await self.progress(
            request,
            [
                {"status": "retrieving manifest"},
                {"status": "starting upload", "digest": digest, "total": 1000},
                {"status": "pushing manifest"},
                {"status": "success"},
            ],
        )

    async def create(self, request: web.Request) -> web.StreamResponse:
        name = str((self.kind.body(request) or {}).get("model") or "")
        if not name:
            return self.kind.native_error(400, "model is required")
        self.kind.add_model(name)
        return await self.progress(
            request,
            [
                {"status": "reading model metadata"},
                {"status": "creating system layer"},
                {"status": "writing manifest"},
                {"status": "success"},
            ],
        )

    async def delete(self, request: web.Request) -> web.Response:
        body = self.kind.body(request) or {}
        model = self.kind.find(body.get("model") or body.get("name"))
        if model is None:
            return self.kind.native_error(404, f"model '{body.get('model')}' not found")
        self.kind.remove_model(model)
        return web.Response(status=200)

    async def copy(self, request: web.Request) -> web.Response:
        body = self.kind.body(request) or {}
        if self.kind.find(body.get("source")) is None:
            return self.kind.native_error(404, f"model '{body.get('source')}' not found")
        if not body.get("destination"):
            return self.kind.native_error(400, "destination is required")
        self.kind.add_model(str(body["destination"]))
        return web.Response(status=200)

    async def blob_exists(self, request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def blob_create(self, request: web.Request) -> web.Response:
        return web.Response(status=201)
