"""Deterministic "model output" and the paced writer every streaming answer goes through.

The fake model's answer is `w0 w1 w2 ...`: one piece per chunk, so a test can check
that a stream arrived whole and in order by joining the deltas. Token counts are word
counts, embeddings are hashes: the same input always gives the same output.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import uuid
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from tests.support.fakes.state import EngineState, Fault, RecordedRequest

FAULT_KEY = web.RequestKey("fault", Fault)
RECORD_KEY = web.RequestKey("record", RecordedRequest)
BODY_KEY: web.RequestKey[Any] = web.RequestKey("body")


NDJSON = "application/x-ndjson"


def ndjson(payload: dict[str, Any]) -> bytes:
    """One line of newline-delimited JSON, as Ollama streams."""
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def pieces(count: int) -> list[str]:
    """The text of `count` fake tokens."""
    return [f"w{i} " for i in range(count)]


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def message_text(messages: Any) -> str:
    """All the text in OpenAI or Ollama chat messages (string or content-part lists)."""
    texts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return " ".join(texts)


def prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return " ".join(str(item) for item in prompt)
    return str(prompt or "")


def plan(state: EngineState, fault: Fault, limit: Any) -> tuple[list[str], str]:
    """The pieces to produce and the finish reason, honouring a max-tokens `limit`."""
    count = fault.chunks if fault.chunks is not None else state.chunks
    if isinstance(limit, int) and 0 <= limit < count:
        return pieces(limit), "length"
    return pieces(count), "stop"


def new_id(prefix: str, length: int = 32) -> str:
    return prefix + uuid.uuid4().hex[:length]


def embedding(text: str, model: str, dims: int) -> list[float]:
    """A unit vector derived from a hash of (model, text)."""
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{model}\0{text}\0{counter}".encode()).digest()
        counter += 1
    values = [(b / 127.5) - 1.0 for b in raw[: dims * 4 : 4]]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


def embedding_b64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def close_connection(request: web.Request) -> None:
    """Drop the client's TCP connection now; whatever was written is flushed first."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def write_stream(
    request: web.Request,
    state: EngineState,
    fault: Fault,
    events: Iterable[bytes],
    *,
    content_type: str,
    tail: bytes,
    error_tail: bytes,
) -> web.StreamResponse:
    """Send `events` paced by the fault or the engine, then `tail` (e.g. `data: [DONE]`).

    `close_after` drops the connection after that many events; `error_after` sends
    `error_tail` (the kind's error event, and whatever the engine sends after it)
    in place of the remaining events.
    """
    response = web.StreamResponse(
        headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    delay = fault.chunk_delay if fault.chunk_delay is not None else state.chunk_delay
    if fault.first_chunk_delay > 0:
        await asyncio.sleep(fault.first_chunk_delay)
    pending = list(events)
    if delay <= 0 and fault.close_after is None and fault.error_after is None:
        # Unpaced: one write, so a benchmark measures the gateway and not this loop.
        await response.write(b"".join(pending) + tail)
        await response.write_eof()
        return response
    # One step past the last event, so a fault at len(events) lands before the tail.
    for index in range(len(pending) + 1):
        if 0 < index < len(pending) and delay > 0:
            await asyncio.sleep(delay)
        if fault.close_after is not None and index >= fault.close_after:
            close_connection(request)
            return response
        if fault.error_after is not None and index >= fault.error_after:
            await response.write(error_tail)
            await response.write_eof()
            return response
        if index < len(pending):
            await response.write(pending[index])
    await response.write(tail)
    await response.write_eof()
    return response
