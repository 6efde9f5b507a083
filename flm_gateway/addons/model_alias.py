"""Answers name the model the client asked for, not the engine's upstream name.

Policy (API listeners; routed `chat`, `completions` and `embeddings` answers below
400): a route may send `chat` to an engine as `tiny`, and the engine answers with
`"model": "tiny"` (or a file path, for llama.cpp). The client asked for `chat`, so
every `"model": "<string>"` member of the answer is rewritten to `chat`, in a JSON
body and in every event of a stream; the engine and the model it was asked for go in
the `x-flm-engine` and `x-flm-upstream-model` response headers (LiteLLM names its
`x-litellm-model-api-base` the same way). Passthrough answers are left alone.

A stream stays a stream: `AliasFilter` (a `response.stream` callable, composed with
the one already there, see `stream_filters`) passes on every complete line of each
chunk at once, rewritten; only the bytes after a chunk's last newline wait for the
next chunk. SSE clients act on complete events, which end with a newline, so nothing
they could use is held back. When the route sends the client's own name upstream and
the engine's first chunk that names a model names exactly that one in every member, the
rest of the stream passes unscanned (an engine names one model per answer; this saves a
scan per chunk). A line longer than `MAX_LINE` stops the rewriting for
that stream (its bytes pass through as they came). The rewrite is a regular
expression, not a JSON parse: in JSON text `"model":` can only be a member name
(quotes inside strings are escaped), so client text never matches. A stream whose
body is compressed (`content-encoding`) is not rewritten. Since the length changes,
a streamed answer's `content-length` is replaced by chunked encoding.
Reads `flm.listener`, `flm.api.kind`, `flm.api.model`, `flm.route.engine`,
`flm.route.upstream_model`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable

from mitmproxy import http

from flm_gateway.proxy.addon_contract import Unconfigured
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    API_KIND,
    API_MODEL,
    LISTENER,
    ROUTE_ENGINE,
    ROUTE_UPSTREAM_MODEL,
)

MAX_LINE = 1024 * 1024
"""Bytes without a newline after which a stream is passed through unrewritten."""
ALIASED_KINDS = frozenset({"chat", "completions", "embeddings"})
ENGINE_HEADER = "x-flm-engine"
UPSTREAM_MODEL_HEADER = "x-flm-upstream-model"

_MODEL_MEMBER = re.compile(rb'"model"\s*:\s*("(?:[^"\\\n]|\\.)*")')

ChunkFilter = Callable[[bytes], bytes | Iterable[bytes]]


def member_for(alias: str) -> bytes:
    """The `"model":"<alias>"` member, JSON-escaped."""
    return b'"model":' + json.dumps(alias).encode()


def rewrite(data: bytes, member: bytes) -> bytes:
    """`data` with every `"model": "..."` member replaced by `member`."""
    return _MODEL_MEMBER.sub(lambda _: member, data)


def names_only(data: bytes, alias: str) -> bool:
    """`data` has a `"model"` member and every one of them is `alias` already."""
    values = _MODEL_MEMBER.findall(data)
    return bool(values) and all(json.loads(value) == alias for value in values)


class AliasFilter:
    """A `response.stream` callable rewriting the model of each complete line.

    `echo_expected`: the engine was asked for `alias` itself; once a chunk shows it
    answers with that name, the filter stops scanning (`gave_up`, i.e. passes through)."""

    __slots__ = ("_tail", "alias", "echo_expected", "gave_up", "inner", "member")

    def __init__(
        self, alias: str, inner: ChunkFilter | None = None, echo_expected: bool = False
    ) -> None:
        self.inner = inner
        self.alias = alias
        self.member = member_for(alias)
        self.echo_expected = echo_expected
        self.gave_up = False
        self._tail = b""

    def __call__(self, chunk: bytes) -> list[bytes]:
        out = chunk if self.inner is None else self.inner(chunk)
        data = out if isinstance(out, bytes) else b"".join(out)
        if self.gave_up:
            return [data] if data else []
        if self._tail:
            data, self._tail = self._tail + data, b""
        if not chunk:  # the end of the body: the last line may lack its newline
            return [rewrite(data, self.member)] if data else []
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > MAX_LINE:
            self.gave_up = True
            return [data]
        self._tail = data[cut:]
        if not cut:
            return []
        head = data[:cut]
        if self.echo_expected and b'"model"' in head:
            self.echo_expected = False  # decided on the first chunk that names a model
            if not self._tail and names_only(head, self.alias):
                self.gave_up = True
                return [head]
        return [rewrite(head, self.member)]


def _wants_alias(flow: http.HTTPFlow) -> str | None:
    """The model the client asked for, when this answer should carry it."""
    listener = LISTENER.get(flow)
    response = flow.response
    if (
        response is None
        or response.status_code >= 400
        or listener is None
        or listener.passthrough is not None
        or ROUTE_ENGINE.get(flow) is None
        or API_KIND.get(flow) not in ALIASED_KINDS
    ):
        return None
    model = API_MODEL.get(flow)
    return model if isinstance(model, str) else None


def _name_the_engine(flow: http.HTTPFlow, response: http.Response) -> None:
    response.headers[ENGINE_HEADER] = ROUTE_ENGINE.require(flow)
    upstream = ROUTE_UPSTREAM_MODEL.get(flow)
    if isinstance(upstream, str):
        response.headers[UPSTREAM_MODEL_HEADER] = upstream


class ModelAlias(Unconfigured):
    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        alias = _wants_alias(flow)
        response = flow.response
        if alias is None or response is None:
            return
        _name_the_engine(flow, response)
        if not response.stream or "content-encoding" in response.headers:
            return
        if "content-length" in response.headers:
            del response.headers["content-length"]
            response.headers["transfer-encoding"] = "chunked"
        inner = response.stream if callable(response.stream) else None
        echo = ROUTE_UPSTREAM_MODEL.get(flow) in (None, alias)
        response.stream = AliasFilter(alias, inner, echo_expected=echo)

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        alias = _wants_alias(flow)
        response = flow.response
        if alias is None or response is None or response.stream:
            return
        _name_the_engine(flow, response)
        content = response.get_content(strict=False)
        if content:
            rewritten = rewrite(content, member_for(alias))
            if rewritten != content:
                response.content = rewritten
