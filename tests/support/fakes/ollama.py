"""A fake Ollama server: its native /api and its OpenAI compatibility under /v1.

Paths and shapes from Ollama's docs/api.md and openai/openai.go
(https://github.com/ollama/ollama/blob/main/docs/api.md):
- GET / (and HEAD /): "Ollama is running". GET /api/version: {"version"}.
- GET /api/tags: models with name, model, modified_at, size, digest, details{parent_model,
  format, family, families, parameter_size, quantization_level}. A name without a tag is
  listed with ":latest", and a request may use either form. GET /api/ps: the same plus
  expires_at, size_vram, context_length. POST /api/show: modelfile, parameters,
  template, details, model_info, capabilities, modified_at.
- POST /api/chat, /api/generate: NDJSON (application/x-ndjson), one object per piece with
  done: false, then done: true with done_reason and prompt_eval_count/eval_count and the
  durations (/api/generate adds `context`); `stream` defaults to true;
  options.num_predict limits the pieces. POST /api/embed, /api/embeddings (legacy).
- The admin endpoints (pull, push, create, delete, copy, blobs): see `ollama_admin.py`.
- Native errors are {"error": "..."}; /v1 errors {"error": {"message", "type", "param",
  "code"}} with type not_found_error for 404; unknown paths: text "404 page not found".
- /v1 streams: every chunk has delta {"role": "assistant", "content": ...}, no role-only
  chunk, system_fingerprint "fp_ollama", ids "chatcmpl-<n>"; include_usage is honoured.
  /v1/models ids are the tagged names, owned_by the namespace ("library").
"""

from __future__ import annotations

import hashlib
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web

from tests.support.fakes.generate import (
    FAULT_KEY,
    NDJSON,
    count_tokens,
    embedding,
    message_text,
    ndjson,
    plan,
    prompt_text,
    write_stream,
)
from tests.support.fakes.ollama_admin import OllamaAdmin
from tests.support.fakes.openai_like import JSONDict, OpenAIKind
from tests.support.fakes.state import EngineState

OLLAMA_VERSION = "0.12.6"


def tagged(name: str) -> str:
    """Ollama's canonical name: `llama3.2` is `llama3.2:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def timestamp(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat().replace("+00:00", "Z")


class OllamaKind(OpenAIKind):
    name: ClassVar[str] = "ollama"
    default_models: ClassVar[tuple[str, ...]] = ("llama3.2:1b", "nomic-embed-text:latest")
    health_paths: ClassVar[frozenset[str]] = frozenset({"/", "/api/version"})
    admin_paths: ClassVar[frozenset[str]] = OllamaAdmin.ADMIN_PATHS

    def __init__(self, state: EngineState) -> None:
        super().__init__(state)
        self.admin = OllamaAdmin(self)

    def routes(self) -> list[web.RouteDef]:
        return [
            *super().routes(),
            web.get("/", self.root),  # aiohttp answers HEAD for GET routes
            web.get("/api/version", self.version),
            web.get("/api/tags", self.tags),
            web.get("/api/ps", self.ps),
            web.post("/api/show", self.show),
            web.post("/api/chat", self.chat),
            web.post("/api/generate", self.generate),
            web.post("/api/embed", self.embed),
            web.post("/api/embeddings", self.embed_legacy),
            *self.admin.routes(),
        ]

    def is_admin(self, path: str) -> bool:
        return OllamaAdmin.is_admin(path)

    # ---- model catalogue ----------------------------------------------------------

    def find(self, name: Any) -> str | None:
        """The served model `name` refers to, in its canonical tagged form."""
        if not isinstance(name, str) or not name:
            return None
        wanted = tagged(name)
        return wanted if wanted in {tagged(m) for m in self.state.models} else None

    def resolve_model(self, name: Any) -> str | None:
        return name if self.find(name) else None

    def add_model(self, name: str) -> None:
        if self.find(name) is None:
            self.state.models.append(tagged(name))

    def remove_model(self, name: str) -> None:
        self.state.models[:] = [m for m in self.state.models if tagged(m) != tagged(name)]

    def details(self, model: str) -> JSONDict:
        family = "nomic-bert" if "embed" in model else "llama"
        return {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": "137M" if "embed" in model else "1.2B",
            "quantization_level": "F16" if "embed" in model else "Q4_K_M",
        }

    def tag_entry(self, model: str) -> JSONDict:
        name = tagged(model)
        digest = hashlib.sha256(name.encode()).hexdigest()
        return {
            "name": name,
            "model": name,
            "modified_at": timestamp(self.state.created),
            "size": 1_000_000_000 + int(digest[:6], 16),
            "digest": digest,
            "details": self.details(name),
        }

    def model_entry(self, model: str) -> JSONDict:
        path = tagged(model).split(":", 1)[0].split("/")
        return {
            "id": tagged(model),
            "object": "model",
            "created": self.state.created,
            "owned_by": path[-2] if len(path) > 1 else "library",
        }

    # ---- OpenAI-layer quirks -------------------------------------------------------

    def completion_id(self, chat: bool) -> str:
        return f"{'chatcmpl' if chat else 'cmpl'}-{random.randint(0, 999)}"

    def envelope_extra(self, model: str) -> JSONDict:
        return {"system_fingerprint": "fp_ollama"}

    def choice_extra(self) -> JSONDict:
        return {}

    def message_extra(self) -> JSONDict:
        return {}

    def role_delta(self) -> JSONDict | None:
        return None

    def piece_delta(self, piece: str) -> JSONDict:
        return {"role": "assistant", "content": piece}

    def finish_delta(self) -> JSONDict:
        return {"role": "assistant", "content": ""}

    def null_usage_on_chunks(self) -> bool:
        return False

    def error_body(self, status: int, message: str) -> JSONDict:
        kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def native_error(self, status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    def fault_response(self, request: web.Request, status: int, message: str) -> web.Response:
        if request.path.startswith("/v1/"):
            return self.error_response(status, message)
        return self.native_error(status, message)

    def model_not_found(self, name: Any) -> web.Response:
        return self.error_response(404, f'model "{name}" not found, try pulling it first')

    def unknown_path(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="404 page not found")

    def unhealthy(self) -> web.Response:
        return self.native_error(500, "ollama is unhealthy")

    def loading(self) -> web.Response:
        return self.native_error(
            503, "server busy, please try again.  maximum pending requests exceeded"
        )

    # ---- native handlers ----------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": OLLAMA_VERSION})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self.tag_entry(m) for m in self.state.models]})

    async def ps(self, request: web.Request) -> web.Response:
        expires = timestamp((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
        models = [
            {**entry, "expires_at": expires, "size_vram": entry["size"], "context_length": 4096}
            for entry in map(self.tag_entry, self.state.models)
        ]
        for entry in models:
            entry.pop("modified_at")
        return web.json_response({"models": models})

    async def show(self, request: web.Request) -> web.Response:
        body = self.body(request) or {}
        model = self.find(body.get("model") or body.get("name"))
        if model is None:
            return self.native_error(404, f"model '{body.get('model')}' not found")
        details = self.details(model)
        return web.json_response(
            {
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model}\n',
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": details,
                "model_info": {
                    "general.architecture": details["family"],
                    "general.parameter_count": 1_235_814_432,
                    f"{details['family']}.context_length": 131072,
                },
                "capabilities": ["embedding"] if "embed" in model else ["completion"],
                "modified_at": timestamp(self.state.created),
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self.generation(request, chat=True)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self.generation(request, chat=False)

    async def generation(self, request: web.Request, chat: bool) -> web.StreamResponse:
        body = self.body(request)
        if body is None:
            return self.native_error(400, "invalid JSON body")
        if not body.get("model"):
            return self.native_error(400, "model is required")
        if self.find(body["model"]) is None:
            return self.native_error(
                404, f'model "{body["model"]}" not found, try pulling it first'
            )
        model = body["model"]
        if chat and body.get("messages") == []:  # an empty chat only loads the model
            return web.json_response(
                {
                    "model": model,
                    "created_at": timestamp(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load",
                    "done": True,
                }
            )
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        texts, finish = plan(self.state, request[FAULT_KEY], (options or {}).get("num_predict"))
        prompt = count_tokens(
            message_text(body.get("messages")) if chat else prompt_text(body.get("prompt"))
        )

        def piece(text: str) -> JSONDict:
            out: JSONDict = {"model": model, "created_at": timestamp()}
            if chat:
                out["message"] = {"role": "assistant", "content": text}
            else:
                out["response"] = text
            return out

        final = {
            **piece(""),
            "done": True,
            "done_reason": finish,
            "total_duration": 1_000_000 * (len(texts) + 1),
            "load_duration": 100_000,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": 100_000 * prompt,
            "eval_count": len(texts),
            "eval_duration": 1_000_000 * len(texts),
        }
        if not chat:
            final["context"] = list(range(1, prompt + len(texts) + 1))
        if body.get("stream", True) is False:
            whole = piece("".join(texts))
            return web.json_response(
                {**final, **{k: whole[k] for k in ("message", "response") if k in whole}}
            )
        events = [ndjson({**piece(t), "done": False}) for t in texts] + [ndjson(final)]
        return await write_stream(
            request,
            self.state,
            request[FAULT_KEY],
            events,
            content_type=NDJSON,
            tail=b"",
            error_tail=ndjson({"error": "injected mid-stream failure"}),
        )

    async def embed(self, request: web.Request) -> web.Response:
        body = self.body(request) or {}
        if self.find(body.get("model")) is None:
            return self.native_error(
                404, f'model "{body.get("model")}" not found, try pulling it first'
            )
        raw = body.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        vectors = [embedding(str(item), body["model"], 8) for item in inputs]
        tokens = sum(count_tokens(str(item)) for item in inputs)
        return web.json_response(
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": 1_000_000,
                "load_duration": 100_000,
                "prompt_eval_count": tokens,
            }
        )

    async def embed_legacy(self, request: web.Request) -> web.Response:
        body = self.body(request) or {}
        if self.find(body.get("model")) is None:
            return self.native_error(404, f"model '{body.get('model')}' not found")
        return web.json_response(
            {"embedding": embedding(str(body.get("prompt", "")), body["model"], 8)}
        )
