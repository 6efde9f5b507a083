"""A raw recording engine: proves what reached the engine, byte for byte.

The adversarial tests ask one question of every attack: what did the engine get?
`RecordingEngine` answers it below any HTTP library. It is a plain asyncio server
on 127.0.0.1, run in a thread of the test process, that reads each request as raw
bytes (request line, header lines and body exactly as they arrived; chunked bodies
are de-chunked leniently and the chunking kept on record) and answers in the real
protocol of the engine kind it plays, enough for the gateway's health checks, model
lists and the OpenAI endpoints:

- every kind: `GET /v1/models`, `POST /v1/chat/completions` (JSON, or SSE when the
  body asks to stream), `/v1/completions`, `/v1/embeddings`,
  `/v1/audio/transcriptions` (`{"text": ...}`);
- `ollama`: `GET /` ("Ollama is running"), `/api/version`, `/api/tags`, `/api/ps`;
  any other `/api/...` path answers `{"status": "success"}`, as pull/delete/copy do;
- `vllm`: `GET /health` (200, empty), `/version`;
- `llamacpp`: `GET /health` (`{"status": "ok"}`), `/props`, `/slots`;
- `lmstudio`: `GET /api/v0/models`.
Anything else answers 200 `{"ok": true}`: the engine accepts what it is given, so a
request that reaches it is visible in `seen`, never hidden by an engine-side 404.

Each `Seen` request offers the views two parsers might disagree on:
- `path`: the path as Go's `net/http` (Ollama), aiohttp and starlette route on it:
  every `%XX` decoded once, `%2F` included;
- `json`: the body as Python's `json` reads it (duplicate key: last wins);
- `go_field(name)`: the top-level field Go's `encoding/json` would decode into a
  struct field `name`: keys compared under Unicode case folding, last one wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

HEALTH_PATHS = {
    "ollama": {"/", "/api/version", "/api/tags", "/api/ps"},
    "vllm": {"/health", "/version", "/v1/models"},
    "llamacpp": {"/health", "/props", "/slots", "/v1/models"},
    "lmstudio": {"/api/v0/models", "/v1/models"},
    "openai": {"/v1/models"},
}
MAX_HEAD = 1 << 20


@dataclass
class Seen:
    """One request exactly as the engine received it."""

    method: str
    target: bytes
    """The request-target as sent (path and query, still percent-encoded)."""
    version: bytes
    headers: list[tuple[bytes, bytes]]
    """Header lines split once at the first colon, value stripped of spaces and tabs."""
    raw_head: bytes
    body: bytes = b""
    chunked: bool = False
    trailers: bytes = b""

    @property
    def raw_path(self) -> str:
        return self.target.split(b"?", 1)[0].decode("latin-1")

    @property
    def path(self) -> str:
        """The path every `%XX` decoded once (as Go, aiohttp and starlette route on it)."""
        return unquote_to_bytes(self.raw_path).decode("utf-8", "replace")

    def header(self, name: str) -> str | None:
        """The last value of header `name` (case-insensitive), or None."""
        wanted = name.lower().encode()
        values = [v for k, v in self.headers if k.lower() == wanted]
        return values[-1].decode("latin-1") if values else None

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k.lower() == wanted]

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def go_field(self, name: str) -> Any:
        """What Go's encoding/json puts in a struct field `name`: case-folded keys, last wins."""
        found: Any = None
        folded = name.casefold()
        for key, value in json.loads(self.body, object_pairs_hook=list):
            if key.casefold() == folded:
                found = value
        return found


@dataclass
class RecordingEngine:
    """A recording engine of `kind` serving `models`; `with` starts and stops it."""

    kind: str = "ollama"
    models: tuple[str, ...] = ("tiny",)
    host: str = "127.0.0.1"
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def calls(self, *, health: bool = False) -> list[Seen]:
        """The requests seen, oldest first; health checks and model lists left out unless asked."""
        skip = set() if health else HEALTH_PATHS[self.kind]
        with self._lock:
            return [s for s in self.seen if not (s.method == "GET" and s.path in skip)]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()

    def __enter__(self) -> RecordingEngine:
        ready = threading.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._serve, sock=sock))
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                loop.run_until_complete(server.wait_closed())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"recording-{self.kind}", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    # ---- the server -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                seen = await _read_request(reader)
                if seen is None:
                    break
                with self._lock:
                    self.seen.append(seen)
                status, content_type, body, stream = self._answer(seen)
                writer.write(_response_head(status, content_type, None if stream else len(body)))
                if stream:
                    for event in body.split(b"\n\n"):
                        if event:
                            data = event + b"\n\n"
                            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                            await writer.drain()
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(body)
                await writer.drain()
                if (seen.header("connection") or "").lower() == "close":
                    break
        writer.close()

    def _answer(self, seen: Seen) -> tuple[int, str, bytes, bool]:
        path, kind = seen.path, self.kind
        model = self.models[0]
        try:
            body = seen.json if seen.body and path.startswith("/v1/") else None
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
        wants_stream = isinstance(body, dict) and body.get("stream") is True
        if path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": kind} for m in self.models
            ]
            return _json(200, {"object": "list", "data": data})
        if path == "/v1/chat/completions":
            if wants_stream:
                return 200, "text/event-stream", _sse_chat(model), True
            return _json(200, _chat(model))
        if path == "/v1/completions":
            return _json(200, _completion(model))
        if path == "/v1/embeddings":
            return _json(200, _embeddings(model))
        if path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            return _json(200, {"text": "recorded"})
        if kind == "ollama":
            if path == "/":
                return 200, "text/plain; charset=utf-8", b"Ollama is running", False
            if path == "/api/version":
                return _json(200, {"version": "0.12.6"})
            if path in ("/api/tags", "/api/ps"):
                return _json(200, {"models": [_ollama_model(m) for m in self.models]})
            if path.startswith("/api/"):
                return _json(200, {"status": "success"})
        if kind == "vllm" and path == "/health":
            return 200, "application/json", b"", False
        if kind == "vllm" and path == "/version":
            return _json(200, {"version": "0.11.0"})
        if kind == "llamacpp" and path == "/health":
            return _json(200, {"status": "ok"})
        if kind == "llamacpp" and path == "/props":
            return _json(200, {"build_info": "b6000-recording", "total_slots": 1})
        if kind == "llamacpp" and path == "/slots":
            return _json(200, [{"id": 0, "is_processing": False}])
        if kind == "lmstudio" and path == "/api/v0/models":
            data = [
                {"id": m, "object": "model", "type": "llm", "state": "loaded"} for m in self.models
            ]
            return _json(200, {"object": "list", "data": data})
        return _json(200, {"ok": True})


async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
    """One request as raw as it came; None at a clean end of the connection."""
    head = b""
    while not head.endswith(b"\r\n\r\n") and not head.endswith(b"\n\n"):
        line = await reader.readline()
        if not line:
            if head.strip():
                raise ValueError("connection closed inside a request head")
            return None
        head += line
        if len(head) > MAX_HEAD:
            raise ValueError("request head too large")
        if head in (b"\r\n", b"\n"):
            head = b""  # tolerated blank line between requests
    lines = head.rstrip(b"\r\n").replace(b"\r\n", b"\n").split(b"\n")
    method, target, version = ([*lines[0].split(b" ", 2), b"", b""])[:3]
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name, value.strip(b" \t")))
    seen = Seen(method.decode("latin-1"), target, version, headers, head)
    encoding = (seen.header("transfer-encoding") or "").lower()
    if "chunked" in encoding:
        seen.chunked = True
        chunks = []
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                trailer = b""
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    trailer += line
                seen.trailers = trailer
                break
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        seen.body = b"".join(chunks)
    elif (length := seen.header("content-length")) is not None:
        seen.body = await reader.readexactly(int(length))
    return seen


def _response_head(status: int, content_type: str, length: int | None) -> bytes:
    framing = (
        b"Content-Length: %d" % length if length is not None else b"Transfer-Encoding: chunked"
    )
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s\r\n\r\n" % (
        status,
        b"OK" if status == 200 else b"Error",
        content_type.encode(),
        framing,
    )


def _json(status: int, payload: Any) -> tuple[int, str, bytes, bool]:
    return status, "application/json", json.dumps(payload).encode(), False


_USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def _chat(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-rec",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "recorded"},
                "finish_reason": "stop",
            }
        ],
        "usage": _USAGE,
    }


def _sse_chat(model: str) -> bytes:
    events = []
    for piece, finish in (("rec", None), ("orded", "stop")):
        chunk = {
            "id": "chatcmpl-rec",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": piece},
                    "finish_reason": finish,
                }
            ],
        }
        events.append(b"data: " + json.dumps(chunk).encode())
    events.append(b"data: [DONE]")
    return b"\n\n".join(events) + b"\n\n"


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "cmpl-rec",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "text": "recorded", "finish_reason": "stop"}],
        "usage": _USAGE,
    }


def _embeddings(model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }


def _ollama_model(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2026-01-01T00:00:00Z",
        "size": 1,
        "digest": "0" * 64,
        "details": {"format": "gguf", "family": "llama", "parameter_size": "1B"},
    }


@contextlib.contextmanager
def recording_engine(
    kind: str = "ollama", models: tuple[str, ...] = ("tiny",)
) -> Iterator[RecordingEngine]:
    """`RecordingEngine(kind, models)`, started for the `with` block."""
    with RecordingEngine(kind=kind, models=models) as engine:
        yield engine
