from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

from mitmproxy import flow as mflow
from mitmproxy.test import taddons
from prometheus_client.parser import text_string_to_metric_families

from flm_gateway.addons.metrics_recorder import Metrics
from flm_gateway.engines.adapter import HealthState
from flm_gateway.observability.flow_summary import StreamTap
from flm_gateway.observability.metrics import LABEL_CAP, OTHER, GatewayMetrics
from flm_gateway.proxy.flow_meta import METRICS_TAP
from flm_gateway.tls.mode import CertificateStatus
from tests.ops_flows import routed_flow


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed by prometheus_client's own parser."""
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_a_request_is_counted_once_with_latency() -> None:
    metrics = GatewayMetrics()
    addon = Metrics(metrics)
    with taddons.context(addon):
        flow = routed_flow(route="m*")
        addon.response(flow)
        addon.error(flow)  # a later error hook must not count it again
    labels = {"listener": "main", "route": "m*", "model": "m1", "engine": "e1", "status": "200"}
    assert value(metrics, "flm_requests_total", **labels) == 1.0
    assert (
        value(
            metrics,
            "flm_request_duration_seconds_count",
            listener="main",
            model="m1",
            engine="e1",
        )
        == 1.0
    )


def test_streamed_responses_get_a_tap_and_a_ttft() -> None:
    metrics = GatewayMetrics()
    addon = Metrics(metrics)
    with taddons.context(addon):
        flow = routed_flow()
        assert flow.response is not None
        flow.response.stream = True
        addon.responseheaders(flow)
        tap = flow.response.stream
        assert isinstance(tap, StreamTap)
        assert tap(b"data: x\n\n") == b"data: x\n\n"
        addon.response(flow)
    assert value(metrics, "flm_time_to_first_token_seconds_count", model="m1", engine="e1") == 1.0


def test_buffered_responses_are_not_tapped() -> None:
    addon = Metrics(GatewayMetrics())
    flow = routed_flow()
    addon.responseheaders(flow)
    assert flow.response is not None and flow.response.stream is False
    assert not METRICS_TAP.is_set(flow)


def test_tokens_by_model_and_key() -> None:
    metrics = GatewayMetrics()
    addon = Metrics(metrics)
    flow = routed_flow(
        flm__auth__key_id="k1", flm__usage={"prompt_tokens": 10, "completion_tokens": 4}
    )
    addon.response(flow)
    assert value(metrics, "flm_tokens_total", model="m1", key_id="k1", type="prompt") == 10
    assert value(metrics, "flm_tokens_total", model="m1", key_id="k1", type="completion") == 4


def test_upstream_errors_and_rejections() -> None:
    metrics = GatewayMetrics()
    addon = Metrics(metrics)
    failed = routed_flow(status=None, flm__route__failures=[("e0", "refused")])
    failed.server_conn.timestamp_tcp_setup = None  # the connection never came up
    failed.error = mflow.Error("Connect call failed")
    addon.error(failed)
    rejected = routed_flow(engine=None, status=403, flm__security__rejected="ip_blocked")
    addon.response(rejected)
    assert value(metrics, "flm_upstream_errors_total", engine="e0", kind="probe_refused") == 1
    assert value(metrics, "flm_upstream_errors_total", engine="e1", kind="connect") == 1
    assert value(metrics, "flm_rejections_total", listener="main", reason="ip_blocked") == 1
    # mitmproxy answers a failed connect with 502: it is counted with that status.
    sent = {"listener": "main", "route": "", "model": "m1", "engine": "e1", "status": "502"}
    assert value(metrics, "flm_requests_total", **sent) == 1


def test_unrouted_requests_do_not_label_the_model() -> None:
    metrics = GatewayMetrics()
    Metrics(metrics).response(routed_flow(model="no-such-model", engine=None, status=404))
    labels = {"listener": "main", "route": "", "model": "", "engine": "", "status": "404"}
    assert value(metrics, "flm_requests_total", **labels) == 1


def test_model_label_is_bounded() -> None:
    metrics = GatewayMetrics()
    addon = Metrics(metrics)
    for index in range(LABEL_CAP + 5):
        addon.response(routed_flow(model=f"model-{index}"))
    models = {
        dict(labels)["model"] for (name, labels) in samples(metrics) if name == "flm_requests_total"
    }
    assert len(models) == LABEL_CAP + 1
    assert OTHER in models


def test_live_state_engines_inflight_certificates_reloads() -> None:
    metrics = GatewayMetrics()
    engine = SimpleNamespace(
        reachable=True,
        healthy=True,
        state=HealthState.HEALTHY,
        models={"m1": None, "m2": None},
        config=SimpleNamespace(models=[]),
    )
    runtime: Any = SimpleNamespace(directory=SimpleNamespace(engines={"e1": engine}))
    metrics.runtime_source = lambda: runtime
    metrics.inflight_source = lambda: 3
    expires = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    metrics.certificate_source = lambda: [
        CertificateStatus(listener="tls", mode="packaged-ca", not_after=expires, days_left=99.0)
    ]
    metrics.record_reload(True)
    metrics.record_reload(False)
    assert value(metrics, "flm_engine_up", engine="e1") == 1
    assert value(metrics, "flm_engine_state", engine="e1", state="running-healthy") == 1
    assert value(metrics, "flm_engine_state", engine="e1", state="unreachable") == 0
    assert value(metrics, "flm_engine_models", engine="e1") == 2
    assert value(metrics, "flm_requests_in_flight") == 3
    assert (
        value(
            metrics, "flm_certificate_expiry_timestamp_seconds", listener="tls", mode="packaged-ca"
        )
        == expires.timestamp()
    )
    assert value(metrics, "flm_config_reloads_total", result="ok") == 1
    assert value(metrics, "flm_config_reloads_total", result="failed") == 1
    assert value(metrics, "flm_config_generation") == 2


def test_a_broken_certificate_source_does_not_break_the_exposition() -> None:
    metrics = GatewayMetrics()

    def broken() -> list[CertificateStatus]:
        raise OSError("unreadable")

    metrics.certificate_source = broken
    assert value(metrics, "flm_build_info", version="0.1.0") == 1


def test_registries_are_independent() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    Metrics(first).response(routed_flow())
    assert (
        value(
            second,
            "flm_requests_total",
            listener="main",
            route="",
            model="m1",
            engine="e1",
            status="200",
        )
        is None
    )
