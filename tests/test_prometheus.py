"""The exposition primitives, read back with prometheus_client's own parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flm_gateway.observability.exposition import (
    Counter,
    Gauge,
    Histogram,
    ScrapedGauge,
    format_value,
    render,
)


def parse(*families: Counter | Gauge | Histogram | ScrapedGauge) -> dict[str, object]:
    text = render(families).decode()
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_gauges_and_awkward_label_values() -> None:
    requests = Counter("t_requests", 'Help with "quotes", \\ and\nnewline.', ["model"])
    awkward = 'a "quoted" \\ back\nslash'
    requests.labels(awkward).inc()
    requests.labels(awkward).inc(2.5)
    requests.labels("b").inc()
    generation = Gauge("t_generation", "A gauge.")
    generation.set(1)
    generation.inc()
    parsed = parse(requests, generation)
    assert parsed[f"t_requests_total{[('model', awkward)]}"] == 3.5
    assert parsed[f"t_requests_total{[('model', 'b')]}"] == 1.0
    assert parsed["t_generation[]"] == 2.0
    text = render([requests]).decode()
    assert "# TYPE t_requests_total counter\n" in text and "_created" not in text


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    latency = Histogram("t_seconds", "Latency.", ["engine"], [0.1, 1, 0.5])
    for value in (0.05, 0.1, 0.3, 2.0):
        latency.labels("e").observe(value)
    parsed = parse(latency)

    def bucket(le: str) -> object:
        return parsed[f"t_seconds_bucket{[('engine', 'e'), ('le', le)]}"]

    assert [bucket(le) for le in ("0.1", "0.5", "1.0", "+Inf")] == [2.0, 3.0, 3.0, 4.0]
    assert parsed[f"t_seconds_count{[('engine', 'e')]}"] == 4.0
    assert parsed[f"t_seconds_sum{[('engine', 'e')]}"] == pytest.approx(2.45)


def test_unlabelled_metrics_are_exposed_at_zero_before_any_update() -> None:
    parsed = parse(Counter("t_dropped", "x"), Histogram("t_h", "x", [], [1]))
    assert parsed["t_dropped_total[]"] == 0.0
    assert parsed["t_h_count[]"] == 0.0 and parsed["t_h_bucket[('le', '+Inf')]"] == 0.0


def test_scraped_gauges_are_read_at_render_time() -> None:
    state = {"a": 1.0}
    up = ScrapedGauge("t_up", "Up.", ["engine"], lambda: [((k,), v) for k, v in state.items()])
    assert parse(up) == {"t_up[('engine', 'a')]": 1.0}
    state["a"] = 0.0
    assert parse(up) == {"t_up[('engine', 'a')]": 0.0}


def test_label_counts_are_checked_and_values_formatted() -> None:
    with pytest.raises(ValueError, match="takes labels"):
        Counter("t", "x", ["a", "b"]).labels("only-one")
    assert [format_value(v) for v in (1, 0.25, math.inf, -math.inf)] == [
        "1.0",
        "0.25",
        "+Inf",
        "-Inf",
    ]
    assert format_value(math.nan) == "NaN"
