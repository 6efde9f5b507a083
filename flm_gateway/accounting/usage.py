"""Token counts from what engines send, or estimated from text: pure helpers and a stream meter.

Counts come from, in this order of trust:
- OpenAI's `usage` object (`prompt_tokens`, `completion_tokens`) in a JSON body
  or in a stream chunk (vLLM, llama.cpp, Ollama's and LM Studio's `/v1`);
- Ollama's native `prompt_eval_count` / `eval_count` (the last NDJSON object
  of `/api/chat` and `/api/generate`, and `/api/embed` answers);
- llama.cpp's native `tokens_evaluated` / `tokens_predicted` (`/completion`);
- else an estimate: about `CHARS_PER_TOKEN` characters per token of the prompt
  text and of the generated text (plus `MESSAGE_OVERHEAD` tokens per chat
  message), marked `estimated`.

`StreamMeter` is a callable for mitmproxy's `flow.response.stream`: mitmproxy
calls it with every chunk as it arrives and once with b"" at the end. It never
holds back a complete event: without stripping, each chunk is returned as it
came (the events are parsed from a side buffer); with stripping (the gateway
asked for usage the client did not), complete events go out at once except the
usage-only chunk (`choices: []` with `usage`), and only an incomplete event's
bytes wait for the rest. It never returns an empty chunk (for a chunked HTTP/1
response mitmproxy would write an empty chunk as the end-of-body marker).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
MAX_EVENT_BYTES = 1024 * 1024
"""An event longer than this (no separator seen) stops parsing: the rest passes through."""

Framing = Literal["sse", "ndjson"]
_SEPARATORS: dict[Framing, re.Pattern[bytes]] = {
    "sse": re.compile(rb"\r?\n\r?\n"),
    "ndjson": re.compile(rb"\n"),
}


@dataclass(frozen=True)
class Usage:
    """Token counts of one request, as written to `flow_meta.USAGE`."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool

    def as_metadata(self) -> dict[str, int | bool]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated": self.estimated,
        }


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _text_len(value: Any) -> int:
    """Characters of a string, or of the text parts of an OpenAI content list."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(
            len(part["text"])
            for part in value
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def reported_usage(obj: Any) -> tuple[int | None, int | None] | None:
    """(prompt, completion) tokens an engine reported in `obj`, or None if it reported none."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if isinstance(usage, dict):
        counts = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        if counts != (None, None):
            return counts
    for prompt_key, completion_key in (
        ("prompt_eval_count", "eval_count"),  # Ollama native
        ("tokens_evaluated", "tokens_predicted"),  # llama.cpp native
    ):
        if prompt_key in obj or completion_key in obj:
            return _count(obj.get(prompt_key)), _count(obj.get(completion_key))
    return None


def _message_len(message: Any) -> int:
    if not isinstance(message, dict):
        return 0
    length = sum(
        _text_len(message.get(key)) for key in ("content", "reasoning_content", "reasoning")
    )
    length += _text_len(message.get("thinking"))  # Ollama native
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            length += _text_len(function.get("arguments")) + _text_len(function.get("name"))
    return length


def output_chars(obj: Any) -> int:
    """Generated characters in a response body or stream event (OpenAI, Ollama, llama.cpp)."""
    if not isinstance(obj, dict):
        return 0
    length = 0
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict):
                length += _message_len(choice.get("delta")) + _message_len(choice.get("message"))
                length += _text_len(choice.get("text"))
    length += _message_len(obj.get("message"))  # Ollama /api/chat
    length += _text_len(obj.get("response"))  # Ollama /api/generate
    length += _text_len(obj.get("content"))  # llama.cpp /completion
    return length


def _prompt_part(value: Any) -> tuple[int, int]:
    """(chars, tokens) of a `prompt`/`input` value: text, texts, token ids or lists of them."""
    if isinstance(value, str):
        return len(value), 0
    if not isinstance(value, list):
        return 0, 0
    chars = tokens = 0
    for item in value:
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, int):
            tokens += 1
        elif isinstance(item, list):
            tokens += sum(1 for token in item if isinstance(token, int))
    return chars, tokens


def estimate_prompt(body: Any) -> int:
    """Estimated prompt tokens of a request body (chat, completions, embeddings, Ollama native)."""
    if not isinstance(body, dict):
        return 0
    chars = tokens = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                chars += _text_len(message.get("content"))
                tokens += MESSAGE_OVERHEAD
    for key in ("prompt", "input"):
        part_chars, part_tokens = _prompt_part(body.get(key))
        chars, tokens = chars + part_chars, tokens + part_tokens
    chars += _text_len(body.get("system"))
    return tokens + estimate_tokens(chars)


def is_usage_only_chunk(obj: Any) -> bool:
    """The extra chunk `stream_options.include_usage` adds: `choices: []` and a `usage`."""
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


class StreamMeter:
    """Counts tokens in an SSE or NDJSON stream as it passes; see the module docstring."""

    def __init__(self, framing: Framing, strip_usage_chunk: bool = False) -> None:
        self.framing: Framing = framing
        self.strip = strip_usage_chunk and framing == "sse"
        self.reported: tuple[int | None, int | None] | None = None
        self.chars = 0
        self.gave_up = False
        self._separator = _SEPARATORS[framing]
        self._tail = bytearray()

    def __call__(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return self._finish()
        if self.gave_up:
            return [chunk]
        if not self._tail and self._one_event(chunk):
            # The usual chunk: exactly one whole event (engines flush one per token). It is
            # accounted for as it is, without the buffer and the separator scan.
            keep = self._take(chunk)
            return [chunk] if keep or not self.strip else []
        self._tail += chunk
        kept = self._complete_events()
        return kept if self.strip else [chunk]

    def _one_event(self, chunk: bytes) -> bool:
        """`chunk` is one complete event: it ends with the framing's separator, which
        occurs nowhere else in it (SSE: LF LF without CR; other framings take the scan)."""
        if self.framing != "sse" or not chunk.endswith(b"\n\n"):
            return False
        end = len(chunk) - 2
        return chunk.find(b"\n\n", 0, end) == -1 and b"\r" not in chunk

    def _complete_events(self) -> list[bytes]:
        """Account for every complete event in the tail; the bytes of those to pass on."""
        cut = 0
        kept: list[bytes] = []
        for match in self._separator.finditer(self._tail):
            event = bytes(self._tail[cut : match.end()])
            if self._take(event[: match.start() - cut]):
                kept.append(event)
            cut = match.end()
        del self._tail[:cut]
        if len(self._tail) > MAX_EVENT_BYTES:
            self.gave_up = True
            kept.append(bytes(self._tail))
            self._tail.clear()
        return kept

    def _finish(self) -> list[bytes]:
        """The end of the body: the last event may lack its separator."""
        rest = bytes(self._tail)
        self._tail.clear()
        if rest and not self.gave_up and self._take(rest) and self.strip:
            return [rest]
        return []

    def _take(self, event: bytes) -> bool:
        """Account for one event; False when it is the usage-only chunk (dropped if stripping)."""
        payload = self._payload(event)
        if payload is None:
            return True
        try:
            obj = json.loads(payload)
            usage = reported_usage(obj)
            chars = output_chars(obj)
        except Exception:  # a strange event is passed on; counting never breaks a stream
            return True
        if usage is not None:
            self.reported = usage
        self.chars += chars
        return not is_usage_only_chunk(obj)

    def _payload(self, event: bytes) -> bytes | None:
        if self.framing == "ndjson":
            return event.strip() or None
        line = event.rstrip(b"\n")
        if line.startswith(b"data: ") and b"\n" not in line and b"\r" not in line:
            payload: bytes | None = line[6:]  # the usual event: one `data: ` line
        else:
            payload = self._data_lines(event)
        return None if payload is None or payload.strip() == b"[DONE]" else payload

    @staticmethod
    def _data_lines(event: bytes) -> bytes | None:
        """The `data:` lines of an SSE event joined by LF (SSE's rule), or None if none."""
        data = [
            line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
        ]
        return b"\n".join(data) if data else None

    def usage(self, prompt_estimate: int, generates: bool = True) -> Usage:
        """The counts so far: reported ones where the engine sent them, else estimated."""
        return combine(self.reported, prompt_estimate, estimate_tokens(self.chars), generates)


def combine(
    reported: tuple[int | None, int | None] | None,
    prompt_estimate: int,
    completion_estimate: int,
    generates: bool = True,
) -> Usage:
    """Reported counts where present, estimates for what is missing.

    `generates=False` (embeddings): there are no completion tokens to count.
    """
    prompt, completion = reported if reported is not None else (None, None)
    if not generates:
        completion = 0
    return Usage(
        prompt if prompt is not None else prompt_estimate,
        completion if completion is not None else completion_estimate,
        estimated=prompt is None or completion is None,
    )
