"""Count prompt and completion tokens of every routed request, streams included.

Policy (for flows with `flm.route.engine`: routed API calls and passthrough):
- `request`: a streamed chat or completions request to an engine whose adapter
  honours `stream_options.include_usage` (vLLM, llama.cpp, Ollama, LM Studio;
  not the generic `openai` kind) gets `include_usage: true` added when the
  client did not ask for it, and the flow is marked to strip that extra chunk.
- `responseheaders` (after `streaming`, which set `stream = True` for SSE and
  NDJSON): the stream is replaced by a `StreamMeter` (`flm_gateway.accounting.usage`),
  which passes every event on as it arrives and drops the usage-only chunk the
  client did not ask for. When stripping, a `content-length` is replaced by
  chunked encoding (the body gets shorter). A stream that some other addon
  made callable is left alone; a later addon may wrap the meter (see
  `stream_filters`), and it is found through the wrapper.
- `response`: counts from the engine's report (`usage`, Ollama's
  `prompt_eval_count`/`eval_count`, llama.cpp's `tokens_evaluated`/
  `tokens_predicted`) in the stream or the JSON body, else estimated from the
  text (~4 characters per token) and marked estimated. Embeddings have no
  completion tokens. An engine error answer (status >= 400) counts zero.
  A buffered event stream (one that arrived whole) is metered, and stripped, whole.
- `error` (a stream cut short): the counts of what passed, estimated where no
  report came.
Writes `flm.usage` = `{"prompt_tokens", "completion_tokens",
"estimated"}` before the `response` hooks of later addons run, and
`flm.usage.strip`. Reads `flm.route.engine`, `flm.api.kind`, `flm.api.body`,
`flm.api.stream`. Fails closed like every hook (`guard`); the stream meter itself
never raises (it stops parsing and passes bytes through instead).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mitmproxy import http

from flm_gateway.accounting.stream_filters import find_filter
from flm_gateway.accounting.usage import (
    Framing,
    StreamMeter,
    Usage,
    combine,
    estimate_prompt,
    estimate_tokens,
    output_chars,
    reported_usage,
)
from flm_gateway.bodies.strict_json import read_object
from flm_gateway.proxy.addon_contract import ReadsEngines
from flm_gateway.proxy.api_kind import ApiKind
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import (
    API_BODY,
    API_KIND,
    API_STREAM,
    FAILOVER_RESEND,
    REQUEST_ID,
    ROUTE_ENGINE,
    USAGE,
    USAGE_STRIP,
)

log = logging.getLogger("flm_gateway.usage")

USAGE_STREAM_KINDS = frozenset({"chat", "completions"})
_FRAMINGS: tuple[tuple[str, Framing], ...] = (
    ("text/event-stream", "sse"),
    ("application/x-ndjson", "ndjson"),
)


def framing_of(response: http.Response) -> Framing | None:
    content_type = response.headers.get("content-type", "").lower()
    return next((f for prefix, f in _FRAMINGS if content_type.startswith(prefix)), None)


def client_asked_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def request_body(flow: http.HTTPFlow) -> Any:
    """The client's JSON body: parsed by `openai_api`, or (passthrough) parsed here."""
    body = API_BODY.get(flow)
    if body is not None:
        return body
    raw = flow.request.get_content(strict=False) or b""
    if not raw.lstrip().startswith(b"{"):
        return None
    try:
        return read_object(raw)  # bounded depth: a 100,000-deep body is no RecursionError
    except ValueError:
        return None


def generates_text(flow: http.HTTPFlow) -> bool:
    """False for embeddings (OpenAI's, Ollama's /api/embed(dings), llama.cpp's /embedding)."""
    kind = API_KIND.get(flow)
    if kind == "embeddings":
        return False
    return not (kind == ApiKind.PASSTHROUGH and "embed" in flow.request.path.lower())


class TokenAccounting(ReadsEngines):
    def _engine_streams_usage(self, name: str) -> bool:
        if self._directory is None:
            return False
        state = self._directory.engines.get(name)
        return state is not None and state.adapter.stream_usage

    @fail_closed()
    def request(self, flow: http.HTTPFlow) -> None:
        engine = ROUTE_ENGINE.get(flow)
        if (
            flow.response is not None
            or engine is None
            or API_KIND.get(flow) not in USAGE_STREAM_KINDS
            or not API_STREAM.get(flow)
            or client_asked_usage(API_BODY.require(flow))
            or not self._engine_streams_usage(engine)
        ):
            return
        body = json.loads(flow.request.get_content() or b"")  # routing may have rewritten it
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {})}
        body["stream_options"]["include_usage"] = True
        flow.request.content = json.dumps(body).encode()
        USAGE_STRIP.set(flow, True)

    @fail_closed()
    def flm_failover(self, flow: http.HTTPFlow) -> None:
        """A retry on another engine: routing rewrote the body for it; ask that one again."""
        if FAILOVER_RESEND.get(flow):
            USAGE_STRIP.pop(flow)
            self.request(flow)

    @fail_closed()
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.stream is not True or not ROUTE_ENGINE.is_set(flow):
            return
        framing = framing_of(response)
        if framing is None:
            return
        strip = bool(USAGE_STRIP.get(flow)) and framing == "sse"
        if strip and "content-length" in response.headers:
            del response.headers["content-length"]
            response.headers["transfer-encoding"] = "chunked"
        response.stream = StreamMeter(framing, strip)

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is None or not ROUTE_ENGINE.is_set(flow):
            return
        self._record(flow, self.count(flow, flow.response))

    def error(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        meter = find_filter(response.stream, StreamMeter) if response is not None else None
        if meter is not None and not USAGE.is_set(flow):
            self._record(flow, self._metered(flow, meter))

    def _record(self, flow: http.HTTPFlow, usage: Usage) -> None:
        USAGE.set(flow, usage.as_metadata())
        log.debug(
            "usage request=%s engine=%s prompt=%d completion=%d estimated=%s",
            REQUEST_ID.get(flow),
            ROUTE_ENGINE.get(flow),
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.estimated,
        )

    def _metered(self, flow: http.HTTPFlow, meter: StreamMeter) -> Usage:
        prompt = meter.reported[0] if meter.reported else None
        return meter.usage(
            estimate_prompt(request_body(flow)) if prompt is None else 0, generates_text(flow)
        )

    def count(self, flow: http.HTTPFlow, response: http.Response) -> Usage:
        """The usage of a finished response (streamed or buffered)."""
        meter = find_filter(response.stream, StreamMeter)
        if meter is not None:
            return self._metered(flow, meter)
        if response.status_code >= 400:
            return Usage(0, 0, estimated=False)
        content = response.get_content(strict=False) or b""
        framing = framing_of(response)
        if framing is not None:  # an event stream that arrived whole
            meter = StreamMeter(framing, bool(USAGE_STRIP.get(flow)))
            kept = b"".join([*meter(content), *meter(b"")]) if content else b""
            if meter.strip:
                response.content = kept
            return self._metered(flow, meter)
        try:
            obj = json.loads(content) if content else None
        except (ValueError, UnicodeDecodeError):
            obj = None
        reported = reported_usage(obj)
        prompt = reported[0] if reported else None
        return combine(
            reported,
            estimate_prompt(request_body(flow)) if prompt is None else 0,
            estimate_tokens(output_chars(obj)),
            generates_text(flow),
        )
