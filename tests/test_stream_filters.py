from __future__ import annotations

from flm_gateway.accounting.stream_filters import find_filter
from flm_gateway.accounting.usage import StreamMeter
from flm_gateway.observability.flow_summary import StreamTap


def test_a_wrapped_meter_is_still_found() -> None:
    meter = StreamMeter("sse", False)
    assert find_filter(meter, StreamMeter) is meter
    assert find_filter(StreamTap(meter), StreamMeter) is meter
    assert find_filter(StreamTap(StreamTap(meter)), StreamMeter) is meter
    assert find_filter(StreamTap(), StreamMeter) is None
    assert find_filter(True, StreamMeter) is None
