from __future__ import annotations

import pytest
from mitmproxy import http

from flm_gateway.addons.streaming import Streaming
from tests.support.flows import make_flow


@pytest.mark.parametrize(
    ("content_type", "streamed"),
    [
        ("text/event-stream", True),
        ("text/event-stream; charset=utf-8", True),
        ("application/x-ndjson", True),
        ("application/json", False),
    ],
)
def test_event_streams_are_streamed(content_type: str, streamed: bool) -> None:
    flow = make_flow()
    flow.response = http.Response.make(200, b"", {"content-type": content_type})
    Streaming().responseheaders(flow)
    assert bool(flow.response.stream) is streamed


def test_error_answers_stay_buffered_even_as_event_streams() -> None:
    flow = make_flow()
    flow.response = http.Response.make(400, b"", {"content-type": "text/event-stream"})
    Streaming().responseheaders(flow)
    assert not flow.response.stream
