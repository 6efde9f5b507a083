"""The OpenAI-compatible layer every fake serves, and the generic `openai` kind.

`OpenAIKind` answers GET /v1/models, POST /v1/chat/completions, /v1/completions,
/v1/embeddings and /v1/audio/transcriptions the way OpenAI documents them
(https://platform.openai.com/docs/api-reference). Each engine kind subclasses it and
overrides the small hooks below where the real engine differs: the model listing, the
envelope fields of a chunk, where the role and the finish reason go in a stream,
whether `stream_options.include_usage` is honoured, and the shape of its errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web

from tests.support.fakes import openai_media as media
from tests.support.fakes.generate import (
    BODY_KEY,
    FAULT_KEY,
    count_tokens,
    message_text,
    new_id,
    plan,
    prompt_text,
    write_stream,
)
from tests.support.fakes.state import EngineState

JSONDict = dict[str, Any]
SSE_DONE = b"data: [DONE]\n\n"


def sse(payload: JSONDict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class OpenAIKind:
    """A generic OpenAI-compatible server; the base of every kind."""

    name: ClassVar[str] = "openai"
    default_models: ClassVar[tuple[str, ...]] = ("fake-chat", "fake-embed")
    include_usage: ClassVar[bool] = True
    """Whether the engine honours stream_options.include_usage."""
    health_paths: ClassVar[frozenset[str]] = frozenset({"/v1/models"})
    """Paths a gateway probes for health; they answer 503 while degraded, with no key."""
    admin_paths: ClassVar[frozenset[str]] = frozenset()
    response_headers: ClassVar[Mapping[str, str]] = {}
    """Headers the real engine adds to every answer (e.g. llama.cpp's Server)."""
    owned_by: ClassVar[str] = "fake"

    def __init__(self, state: EngineState) -> None:
        self.state = state

    # ---- routes -------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/models", self.list_models),
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/completions", self.completions),
            web.post("/v1/embeddings", self.embeddings),
            web.post("/v1/audio/transcriptions", self.transcriptions),
        ]

    # ---- hooks a kind overrides -----------------------------------------------------

    def is_admin(self, path: str) -> bool:
        return path in self.admin_paths

    def requires_key(self, path: str) -> bool:
        """Whether a configured API key guards `path` (health paths stay public)."""
        return path not in self.health_paths

    def resolve_model(self, name: Any) -> str | None:
        """The served model a request names; a missing name means the first model."""
        if name is None and self.state.models:
            return self.state.models[0]
        return name if name in self.state.models else None

    def model_entry(self, model: str) -> JSONDict:
        return {
            "id": model,
            "object": "model",
            "created": self.state.created,
            "owned_by": self.owned_by,
        }

    def models_body(self) -> JSONDict:
        return {"object": "list", "data": [self.model_entry(m) for m in self.state.models]}

    def completion_id(self, chat: bool) -> str:
        return new_id("chatcmpl-" if chat else "cmpl-", 24)

    def envelope_extra(self, model: str) -> JSONDict:
        """Fields every completion object and chunk carries besides the OpenAI core."""
        return {"system_fingerprint": "fp_fake"}

    def choice_extra(self) -> JSONDict:
        return {"logprobs": None}

    def message_extra(self) -> JSONDict:
        return {"refusal": None}

    def role_delta(self) -> JSONDict | None:
        """The delta of a role-only first chunk; None when the role rides on each piece."""
        return {"role": "assistant", "content": ""}

    def piece_delta(self, piece: str) -> JSONDict:
        return {"content": piece}

    def separate_finish_chunk(self) -> bool:
        """True: finish_reason comes in its own chunk; False: on the last content chunk."""
        return True

    def finish_delta(self) -> JSONDict:
        return {}

    def usage_extra(self, usage: JSONDict) -> JSONDict:
        """Fields sent next to `usage` (llama.cpp adds `timings`)."""
        return {}

    def null_usage_on_chunks(self) -> bool:
        """OpenAI sends "usage": null on every chunk when include_usage is set."""
        return True

    def error_body(self, status: int, message: str) -> JSONDict:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def error_response(self, status: int, message: str) -> web.Response:
        return web.json_response(self.error_body(status, message), status=status)

    def fault_response(self, request: web.Request, status: int, message: str) -> web.Response:
        """An injected status, in the error shape of the API `request` is addressed to."""
        return self.error_response(status, message)

    def stream_error(self, message: str) -> bytes:
        """The bytes an engine sends when generation fails mid-stream."""
        return sse(self.error_body(500, message))

    def unknown_path(self, request: web.Request) -> web.StreamResponse:
        return self.error_response(404, f"Unknown request URL: {request.method} {request.path}")

    def unauthorized(self) -> web.Response:
        return self.error_response(401, "Incorrect API key provided.")

    def unhealthy(self) -> web.Response:
        return self.error_response(503, "engine is unhealthy")

    def loading(self) -> web.Response:
        return self.error_response(503, "Loading model")

    def model_not_found(self, name: Any) -> web.Response:
        return self.error_response(404, f"The model `{name}` does not exist.")

    # ---- helpers ----------------------------------------------------------------

    def body(self, request: web.Request) -> JSONDict | None:
        body = request.get(BODY_KEY)
        return body if isinstance(body, dict) else None

    def wants_usage(self, body: JSONDict) -> bool:
        options = body.get("stream_options")
        return (
            self.include_usage and isinstance(options, dict) and bool(options.get("include_usage"))
        )

    def chunk(
        self,
        cid: str,
        created: int,
        model: str,
        choices: list[JSONDict],
        obj: str,
        with_usage: bool,
    ) -> JSONDict:
        payload: JSONDict = {
            "id": cid,
            "object": obj,
            "created": created,
            "model": model,
            **self.envelope_extra(model),
            "choices": choices,
        }
        if with_usage and self.null_usage_on_chunks():
            payload["usage"] = None
        return payload

    def usage_chunk(
        self, cid: str, created: int, model: str, obj: str, usage: JSONDict
    ) -> JSONDict:
        return {
            "id": cid,
            "object": obj,
            "created": created,
            "model": model,
            **self.envelope_extra(model),
            "choices": [],
            "usage": usage,
            **self.usage_extra(usage),
        }

    # ---- handlers ---------------------------------------------------------------

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response(self.models_body())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = self.body(request)
        if body is None:
            return self.error_response(400, "the request body is not a JSON object")
        model = self.resolve_model(body.get("model"))
        if model is None:
            return self.model_not_found(body.get("model"))
        fault = request[FAULT_KEY]
        texts, finish = plan(
            self.state, fault, body.get("max_completion_tokens", body.get("max_tokens"))
        )
        prompt = count_tokens(message_text(body.get("messages")))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(texts),
            "total_tokens": prompt + len(texts),
        }
        cid, created = self.completion_id(chat=True), int(time.time())
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(texts), **self.message_extra()}
            answer = {
                "index": 0,
                "message": message,
                **self.choice_extra(),
                "finish_reason": finish,
            }
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    **self.envelope_extra(model),
                    "choices": [answer],
                    "usage": usage,
                    **self.usage_extra(usage),
                }
            )
        with_usage = self.wants_usage(body)
        obj = "chat.completion.chunk"

        def choice(delta: JSONDict, reason: str | None) -> list[JSONDict]:
            return [{"index": 0, "delta": delta, **self.choice_extra(), "finish_reason": reason}]

        events: list[JSONDict] = []
        role = self.role_delta()
        if role is not None:
            events.append(self.chunk(cid, created, model, choice(role, None), obj, with_usage))
        separate = self.separate_finish_chunk()
        for index, piece in enumerate(texts):
            last = index == len(texts) - 1 and not separate
            events.append(
                self.chunk(
                    cid,
                    created,
                    model,
                    choice(self.piece_delta(piece), finish if last else None),
                    obj,
                    with_usage,
                )
            )
        if separate or not texts:
            events.append(
                self.chunk(
                    cid, created, model, choice(self.finish_delta(), finish), obj, with_usage
                )
            )
        if with_usage:
            events.append(self.usage_chunk(cid, created, model, obj, usage))
        return await self.send_sse(request, events)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = self.body(request)
        if body is None:
            return self.error_response(400, "the request body is not a JSON object")
        model = self.resolve_model(body.get("model"))
        if model is None:
            return self.model_not_found(body.get("model"))
        texts, finish = plan(self.state, request[FAULT_KEY], body.get("max_tokens"))
        prompt = count_tokens(prompt_text(body.get("prompt")))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(texts),
            "total_tokens": prompt + len(texts),
        }
        cid, created, obj = self.completion_id(chat=False), int(time.time()), "text_completion"

        def choice(text: str, reason: str | None) -> list[JSONDict]:
            return [{"index": 0, "text": text, **self.choice_extra(), "finish_reason": reason}]

        if not body.get("stream"):
            return web.json_response(
                {
                    "id": cid,
                    "object": obj,
                    "created": created,
                    "model": model,
                    **self.envelope_extra(model),
                    "choices": choice("".join(texts), finish),
                    "usage": usage,
                    **self.usage_extra(usage),
                }
            )
        with_usage = self.wants_usage(body)
        events = [
            self.chunk(cid, created, model, choice(piece, None), obj, with_usage) for piece in texts
        ]
        events.append(self.chunk(cid, created, model, choice("", finish), obj, with_usage))
        if with_usage:
            events.append(self.usage_chunk(cid, created, model, obj, usage))
        return await self.send_sse(request, events)

    async def send_sse(self, request: web.Request, events: list[JSONDict]) -> web.StreamResponse:
        return await write_stream(
            request,
            self.state,
            request[FAULT_KEY],
            [sse(e) for e in events],
            content_type="text/event-stream",
            tail=SSE_DONE,
            error_tail=self.stream_error("injected mid-stream failure"),
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        return await media.embeddings(self, request)

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await media.transcriptions(self, request)
