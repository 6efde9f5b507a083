"""The non-generative OpenAI endpoints: embeddings and audio transcriptions.

- POST /v1/embeddings: one deterministic unit vector per input (a hash of model and text,
  `dimensions` long, 8 by default), as floats or, for `encoding_format: "base64"` (the
  openai SDK's default), as base64 little-endian float32; usage counts words.
- POST /v1/audio/transcriptions: a multipart upload with `file` and `model` fields, read
  as it streams in and never kept; the answer names the file, its byte count and its
  sha256 so a test can prove the upload arrived whole. `response_format` text, json or
  verbose_json. The recorded request's `json` becomes the form fields, the file given as
  {"filename", "size", "content_type"}.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from aiohttp import BodyPartReader, web

from tests.support.fakes.generate import (
    RECORD_KEY,
    count_tokens,
    embedding,
    embedding_b64,
    prompt_text,
)

if TYPE_CHECKING:
    from tests.support.fakes.openai_like import JSONDict, OpenAIKind

EMBEDDING_DIMS = 8


async def embeddings(kind: OpenAIKind, request: web.Request) -> web.Response:
    body = kind.body(request)
    if body is None:
        return kind.error_response(400, "the request body is not a JSON object")
    model = kind.resolve_model(body.get("model"))
    if model is None:
        return kind.model_not_found(body.get("model"))
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
    dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else None
    base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = embedding(json.dumps(item), model, dims or EMBEDDING_DIMS)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": embedding_b64(vector) if base64 else vector,
            }
        )
    tokens = sum(count_tokens(prompt_text(item)) for item in inputs)
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def transcriptions(kind: OpenAIKind, request: web.Request) -> web.StreamResponse:
    """Reads the multipart upload as it arrives and answers with its size and hash."""
    if not request.content_type.startswith("multipart/"):
        return kind.error_response(400, "expected a multipart/form-data upload")
    form: JSONDict = {}
    size, digest = 0, hashlib.sha256()
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):  # nested multipart: not in this API
            continue
        if part.filename is None:
            form[part.name or ""] = await part.text()
            continue
        while chunk := await part.read_chunk():
            size += len(chunk)
            digest.update(chunk)
        form[part.name or ""] = {
            "filename": part.filename,
            "size": size,
            "content_type": part.headers.get("Content-Type"),
        }
    record = request.get(RECORD_KEY)
    if record is not None:
        record.json, record.body_size = form, size
    if "file" not in form:
        return kind.error_response(400, "the `file` field is required")
    model = kind.resolve_model(form.get("model"))
    if model is None:
        return kind.model_not_found(form.get("model"))
    text = (
        f"fake transcript of {form['file']['filename']}: {size} bytes, sha256 {digest.hexdigest()}"
    )
    response_format = form.get("response_format", "json")
    if response_format in ("text", "srt", "vtt"):
        return web.Response(text=text, content_type="text/plain")
    if response_format == "verbose_json":
        return web.json_response(
            {
                "task": "transcribe",
                "language": "english",
                "duration": 1.0,
                "text": text,
                "segments": [],
            }
        )
    return web.json_response({"text": text})
