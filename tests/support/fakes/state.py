"""What a fake engine knows and what it has seen: faults, health, recorded requests.

Everything here is plain data on an `EngineState` instance, shared by the engine's
lifecycle (`engine.py`) and its kind (`openai_like.py` and the kind modules). Nothing
here touches a socket.

Faults come from two places and the second wins field by field:
- the instance (`FakeEngine.set_fault(...)`), optionally limited to some path prefixes
  and to a number of requests;
- the request itself: `x-fake-<field>` headers (`x-fake-status: 503`,
  `x-fake-chunk-delay: 0.01`) or a JSON body field `"x_fake": {"status": 503}`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from multidict import CIMultiDict

Health = Literal["ok", "degraded", "loading"]
HEALTH_STATES: tuple[Health, ...] = ("ok", "degraded", "loading")

# Header prefix and body field a request can use to drive its own faults.
FAULT_HEADER_PREFIX = "x-fake-"
FAULT_BODY_FIELD = "x_fake"


@dataclass(frozen=True, slots=True)
class Fault:
    """Misbehaviour injected into answers. The default value injects nothing."""

    status: int | None = None
    """Answer this status with the kind's error body, before any byte of a real answer."""
    headers_delay: float = 0.0
    """Seconds to wait before sending the response headers (or the fault status)."""
    first_chunk_delay: float = 0.0
    """Seconds between the headers of a stream and its first event (time to first token)."""
    chunks: int | None = None
    """Content chunks (fake tokens) per completion; None keeps the engine's setting."""
    chunk_delay: float | None = None
    """Seconds between streamed events; None keeps the engine's setting."""
    close_after: int | None = None
    """Close the TCP connection after this many streamed events; 0 closes before any byte,
    for any request."""
    error_after: int | None = None
    """Send the kind's mid-stream error event after this many streamed events, then end."""
    paths: tuple[str, ...] = ()
    """Path prefixes an instance fault applies to; empty means every path."""
    times: int | None = None
    """Apply an instance fault to this many matching requests, then clear it."""

    def matches(self, path: str) -> bool:
        return not self.paths or any(path.startswith(prefix) for prefix in self.paths)

    @classmethod
    def overrides(cls, headers: Mapping[str, str], body: Any) -> dict[str, Any]:
        """The per-request fault fields found in `x-fake-*` headers or the body's `x_fake`."""
        found: dict[str, Any] = {}
        body_fields = body.get(FAULT_BODY_FIELD) if isinstance(body, dict) else None
        for spec in fields(cls):
            if spec.name in ("paths", "times"):
                continue
            raw: Any = headers.get(FAULT_HEADER_PREFIX + spec.name.replace("_", "-"))
            if raw is None and isinstance(body_fields, dict):
                raw = body_fields.get(spec.name)
            if raw is None or raw == "":
                continue
            is_float = spec.name.endswith("delay")
            found[spec.name] = float(raw) if is_float else int(raw)
        return found


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake engine received it."""

    method: str
    path: str
    headers: CIMultiDict[str]
    json: Any
    """The parsed JSON body; for multipart uploads the form fields, a file given as
    {"filename", "content_type", "size"}; None when there was no parsable body."""
    query: dict[str, str] = field(default_factory=dict)
    body_size: int = 0
    at: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "json": self.json,
            "query": self.query,
            "body_size": self.body_size,
        }


@dataclass(slots=True)
class EngineState:
    """The mutable state of one fake engine; survives stop() and start()."""

    kind: str
    models: list[str]
    chunks: int = 8
    chunk_delay: float = 0.0
    slots: int = 4
    """Parallel slots an engine that tells them reports (llama.cpp's `total_slots`)."""
    api_key: str | None = None
    max_records: int = 100_000
    fault: Fault = field(default_factory=Fault)
    health: Health = "ok"
    loading_until: float = 0.0
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    requests: deque[RecordedRequest] = field(init=False)

    def __post_init__(self) -> None:
        self.requests = deque(maxlen=self.max_records)

    @property
    def loading(self) -> bool:
        return self.health == "loading" or time.monotonic() < self.loading_until

    def fault_for(self, path: str, headers: Mapping[str, str], body: Any) -> Fault:
        """The fault for one request: the instance fault if it matches, then overrides."""
        base = Fault()
        if self.fault != base and self.fault.matches(path):
            base = self.fault
            if base.times is not None:
                left = base.times - 1
                self.fault = Fault() if left <= 0 else replace(base, times=left)
        overrides = Fault.overrides(headers, body)
        return replace(base, **overrides) if overrides else base
