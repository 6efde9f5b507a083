"""The supervisor's /metrics: the workers' expositions merged into one."""

from __future__ import annotations

from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.observability.metrics_sum import merge_expositions

FIRST = """\
# HELP flm_requests_total Requests.
# TYPE flm_requests_total counter
flm_requests_total{listener="main",status="200"} 3.0
# HELP flm_request_duration_seconds Time.
# TYPE flm_request_duration_seconds histogram
flm_request_duration_seconds_bucket{le="0.1"} 2.0
flm_request_duration_seconds_bucket{le="+Inf"} 3.0
flm_request_duration_seconds_sum 0.25
flm_request_duration_seconds_count 3.0
# HELP flm_requests_in_flight In flight.
# TYPE flm_requests_in_flight gauge
flm_requests_in_flight 2.0
# HELP flm_engine_up Up.
# TYPE flm_engine_up gauge
flm_engine_up{engine="a"} 0.0
# HELP flm_certificate_expiry_timestamp_seconds Expiry.
# TYPE flm_certificate_expiry_timestamp_seconds gauge
flm_certificate_expiry_timestamp_seconds{listener="main"} 2000.0
"""

SECOND = """\
# HELP flm_requests_total Requests.
# TYPE flm_requests_total counter
flm_requests_total{listener="main",status="200"} 4.0
flm_requests_total{listener="main",status="429"} 1.0
# HELP flm_request_duration_seconds Time.
# TYPE flm_request_duration_seconds histogram
flm_request_duration_seconds_bucket{le="0.1"} 5.0
flm_request_duration_seconds_bucket{le="+Inf"} 5.0
flm_request_duration_seconds_sum 0.5
flm_request_duration_seconds_count 5.0
# HELP flm_requests_in_flight In flight.
# TYPE flm_requests_in_flight gauge
flm_requests_in_flight 1.0
# HELP flm_engine_up Up.
# TYPE flm_engine_up gauge
flm_engine_up{engine="a"} 1.0
# HELP flm_certificate_expiry_timestamp_seconds Expiry.
# TYPE flm_certificate_expiry_timestamp_seconds gauge
flm_certificate_expiry_timestamp_seconds{listener="main"} 1000.0
"""


def test_counters_histograms_and_load_gauges_are_summed_states_are_not() -> None:
    merged = merge_expositions([FIRST, SECOND]).splitlines()
    assert 'flm_requests_total{listener="main",status="200"} 7' in merged
    assert 'flm_requests_total{listener="main",status="429"} 1' in merged
    assert 'flm_request_duration_seconds_bucket{le="0.1"} 7' in merged
    assert 'flm_request_duration_seconds_bucket{le="+Inf"} 8' in merged
    assert "flm_request_duration_seconds_sum 0.75" in merged
    assert "flm_request_duration_seconds_count 8" in merged
    assert "flm_requests_in_flight 3" in merged
    assert 'flm_engine_up{engine="a"} 1' in merged  # one worker sees it up
    assert 'flm_certificate_expiry_timestamp_seconds{listener="main"} 1000' in merged


def test_each_family_once_with_its_samples_below_it() -> None:
    merged = merge_expositions([FIRST, SECOND]).splitlines()
    assert merged.count("# TYPE flm_requests_total counter") == 1
    at = merged.index("# TYPE flm_requests_total counter")
    assert merged[at + 1 : at + 3] == [
        'flm_requests_total{listener="main",status="200"} 7',
        'flm_requests_total{listener="main",status="429"} 1',
    ]


def test_one_worker_is_itself() -> None:
    page = GatewayMetrics().exposition().decode()
    merged = merge_expositions([page])
    assert [line for line in merged.splitlines() if line.startswith("#")] == [
        line for line in page.splitlines() if line.startswith("#")
    ]
    assert _values(merged) == _values(page)


def _values(page: str) -> dict[str, float]:
    return {
        series: float(value)
        for line in page.splitlines()
        if not line.startswith("#") and line
        for series, _, value in [line.rpartition(" ")]
    }


def test_no_worker_answers_gives_an_empty_page() -> None:
    assert merge_expositions([]) == "\n"
