"""Chunk filters on `response.stream`: how several addons share one streamed response.

mitmproxy lets a response carry one `stream` callable. An addon that wants to
see the chunks of a stream another addon already filters wraps that callable
and keeps it as its `inner` attribute (the metrics `StreamTap` wraps the
token-accounting `StreamMeter`). `find_filter` finds a filter of a given type
anywhere in that chain, so an addon reading its own filter back (to count what
passed) still finds it after a later addon wrapped it.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 8


def find_filter[F](stream: Any, kind: type[F]) -> F | None:
    """The filter of type `kind` in the `inner` chain starting at `stream`, if any."""
    for _ in range(MAX_DEPTH):
        if isinstance(stream, kind):
            return stream
        stream = getattr(stream, "inner", None)
        if stream is None:
            return None
    return None
