"""The gateway's Prometheus metrics: one set per gateway, no module globals.

Per-request metrics are recorded from a `FlowSummary` by the `metrics_recorder` addon
(`observe`, a handful of counter and histogram updates). Everything that
describes current state (engine health, requests in flight, certificate
expiry, config generation) is read only when Prometheus scrapes, by a
collector, so it costs nothing per request.

Label values that clients can influence (the model name, and key ids or
rejection reasons from other addons) are bounded: after `LABEL_CAP` distinct
values, new ones are reported as `other`, so a client sending random model
names cannot grow the metrics without limit. Requests that were not routed
to an engine carry an empty model label.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from flm_gateway import __version__
from flm_gateway.engines.adapter import HealthState
from flm_gateway.engines.directory import EngineState
from flm_gateway.observability.exposition import (
    Counter,
    Family,
    Gauge,
    Histogram,
    Sample,
    ScrapedGauge,
    render,
)
from flm_gateway.observability.flow_summary import FlowSummary
from flm_gateway.observability.outcomes import UpstreamError, status_label
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.state.store import AuditStatus
from flm_gateway.tls.certificate_status import CertificateInfo

LABEL_CAP = 200
"""Distinct values one client-influenced label may take before `other` is used."""
OTHER = "other"
CERTIFICATE_CACHE = 60.0
"""Seconds certificate statuses are cached between scrapes (they are read from disk)."""

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class BoundedLabel:
    """Admits the first `cap` distinct values of a label, maps later ones to `other`."""

    def __init__(self, cap: int = LABEL_CAP) -> None:
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) >= self._cap:
                return OTHER
            self._seen.add(value)
        return value


class _LiveState:
    """State read at scrape time from the running gateway."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._certificates: tuple[float, Sequence[CertificateInfo]] = (0.0, ())

    def families(self) -> list[Family]:
        return [
            ScrapedGauge(
                "flm_engine_up",
                "1 when the engine answers its health check (healthy or degraded), else 0.",
                ["engine"],
                self._engine_up,
            ),
            ScrapedGauge(
                "flm_engine_state",
                "1 for the engine's current health state (running-healthy, running-degraded, "
                "unreachable).",
                ["engine", "state"],
                self._engine_state,
            ),
            ScrapedGauge("flm_engine_models", "Models the engine lists.", ["engine"], self._models),
            ScrapedGauge(
                "flm_requests_in_flight",
                "Requests received and not yet answered in full.",
                [],
                lambda: [((), float(self._metrics.inflight_source()))],
            ),
            ScrapedGauge(
                "flm_audit_head_seq",
                "The audit log's last record as this gateway last wrote or saw it. Keep this "
                "series off the gateway's host: a lower value later means the log was cut "
                "(check with `security audit verify --anchor SEQ`).",
                [],
                lambda: [((), float(self._metrics.audit_source().head_seq))],
            ),
            ScrapedGauge(
                "flm_audit_tamper_detected",
                "Times since start this gateway found the audit log changed under it (each "
                "also logged and audited as audit.tamper_detected).",
                [],
                lambda: [((), float(self._metrics.audit_source().tamper_detections))],
            ),
            ScrapedGauge(
                "flm_certificate_expiry_timestamp_seconds",
                "When the certificate a TLS listener serves expires (Unix time).",
                ["listener", "mode"],
                self._certificate_expiry,
            ),
        ]

    def _engines(self) -> Iterator[tuple[str, EngineState]]:
        runtime = self._metrics.runtime_source()
        return iter(runtime.directory.engines.items()) if runtime is not None else iter(())

    def _engine_up(self) -> Iterator[Sample]:
        for name, engine in self._engines():
            yield (name,), 1.0 if engine.reachable else 0.0

    def _engine_state(self) -> Iterator[Sample]:
        for name, engine in self._engines():
            for health in HealthState:
                yield (name, health.value), 1.0 if engine.state is health else 0.0

    def _models(self) -> Iterator[Sample]:
        for name, engine in self._engines():
            yield (name,), float(len(engine.models) + len(engine.config.models))

    def _certificate_expiry(self) -> Iterator[Sample]:
        for cert in self._certificate_statuses():
            if cert.not_after is not None:
                yield (cert.listener, cert.mode), cert.not_after.timestamp()

    def _certificate_statuses(self) -> Sequence[CertificateInfo]:
        at, statuses = self._certificates
        now = time.monotonic()
        if at == 0.0 or now - at > CERTIFICATE_CACHE:
            try:
                statuses = tuple(self._metrics.certificate_source())
            except Exception:  # a broken certificate file must not break /metrics
                statuses = ()
            self._certificates = (now, statuses)
        return statuses


def _no_runtime() -> Runtime | None:
    return None


def _no_inflight() -> int:
    return 0


def _no_certificates() -> Sequence[CertificateInfo]:
    return ()


def _no_audit() -> AuditStatus:
    return AuditStatus()


class GatewayMetrics:
    """Every metric of one gateway process (no module globals)."""

    def __init__(self) -> None:
        self.runtime_source: Callable[[], Runtime | None] = _no_runtime
        self.inflight_source: Callable[[], int] = _no_inflight
        self.certificate_source: Callable[[], Sequence[CertificateInfo]] = _no_certificates
        self.audit_source: Callable[[], AuditStatus] = _no_audit
        self.requests = Counter(
            "flm_requests",
            "Requests answered, by listener, route, model, engine and HTTP status "
            "(status 'aborted' when no response was sent).",
            ["listener", "route", "model", "engine", "status"],
        )
        self.latency = Histogram(
            "flm_request_duration_seconds",
            "Time from the request's first byte to the response's last byte.",
            ["listener", "model", "engine"],
            LATENCY_BUCKETS,
        )
        self.ttft = Histogram(
            "flm_time_to_first_token_seconds",
            "Time from the request's first byte to the first body byte of a streamed response.",
            ["model", "engine"],
            TTFT_BUCKETS,
        )
        self.tokens = Counter(
            "flm_tokens",
            "Tokens reported (or estimated) by engines, by model, API key id and type "
            "(prompt or completion).",
            ["model", "key_id", "type"],
        )
        self.upstream_errors = Counter(
            "flm_upstream_errors",
            "Engine failures by engine and kind ("
            + ", ".join(UpstreamError)
            + ", egress_<reason>).",
            ["engine", "kind"],
        )
        self.retries = Counter(
            "flm_retries",
            "Requests sent again after an engine failed before the first byte, by the engine "
            "that failed and the reason (connect, disconnected, 5xx, timeout).",
            ["engine", "reason"],
        )
        self.failovers = Counter(
            "flm_failovers",
            "Retries that went to another engine than the one that failed, by the engine "
            "that failed and the reason.",
            ["engine", "reason"],
        )
        self.rejections = Counter(
            "flm_rejections",
            "Requests refused by a security or rate-limit policy, by listener and reason.",
            ["listener", "reason"],
        )
        self.reloads = Counter(
            "flm_config_reloads",
            "Config reloads by result (ok or failed).",
            ["result"],
        )
        self.last_reload = Gauge(
            "flm_config_last_reload_timestamp_seconds",
            "When the last reload attempt with this result finished (Unix time).",
            ["result"],
        )
        self.generation = Gauge(
            "flm_config_generation",
            "Config generation served now: 1 at start, +1 per successful reload.",
        )
        self.protocol_refusals = Counter(
            "flm_protocol_refusals",
            "Connections and requests refused before any policy ran (server.limits): by status "
            "(400, 408, 413, 414, 431, 505, or 'closed' for a connection closed unread) and "
            "reason.",
            ["status", "reason"],
        )
        self.request_log_dropped = Counter(
            "flm_request_log_dropped",
            "Request log records dropped because the writer could not keep up or failed.",
        )
        build = Gauge("flm_build_info", "Gateway version.", ["version"])
        build.labels(__version__).set(1)
        for result in ("ok", "failed"):
            self.reloads.labels(result)
        self.generation.set(1)
        self._model = BoundedLabel()
        self._key = BoundedLabel()
        self._reason = BoundedLabel()
        self._route = BoundedLabel()
        self._families: list[Family] = [
            self.requests,
            self.latency,
            self.ttft,
            self.tokens,
            self.upstream_errors,
            self.retries,
            self.failovers,
            self.rejections,
            self.protocol_refusals,
            self.reloads,
            self.last_reload,
            self.generation,
            self.request_log_dropped,
            build,
            *_LiveState(self).families(),
        ]

    def observe(self, summary: FlowSummary) -> None:
        """Record one finished request (hot path: a few counter updates)."""
        engine = summary.engine or ""
        model = self._model(summary.model) if engine else ""
        status = status_label(summary.status)
        self.requests.labels(
            summary.listener, self._route(summary.route), model, engine, status
        ).inc()
        if summary.latency is not None:
            self.latency.labels(summary.listener, model, engine).observe(summary.latency)
        if summary.ttft is not None:
            self.ttft.labels(model, engine).observe(summary.ttft)
        if summary.prompt_tokens or summary.completion_tokens:
            key = self._key(summary.key_id)
            if summary.prompt_tokens:
                self.tokens.labels(model, key, "prompt").inc(summary.prompt_tokens)
            if summary.completion_tokens:
                self.tokens.labels(model, key, "completion").inc(summary.completion_tokens)
        for failed_engine, kind in summary.upstream_errors:
            self.upstream_errors.labels(failed_engine, kind).inc()
        for failed_engine, reason, next_engine in summary.retries:
            self.retries.labels(failed_engine, reason).inc()
            if next_engine != failed_engine:
                self.failovers.labels(failed_engine, reason).inc()
        if summary.rejected:
            self.rejections.labels(summary.listener, self._reason(summary.rejected)).inc()

    def record_reload(self, ok: bool) -> None:
        result = "ok" if ok else "failed"
        self.reloads.labels(result).inc()
        self.last_reload.labels(result).set(time.time())
        if ok:
            self.generation.inc()

    def exposition(self) -> bytes:
        """The text exposition format served at /metrics."""
        return render(self._families)
