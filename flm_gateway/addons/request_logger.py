"""Write one request log record per finished request.

Policy: never answers or changes a request. On `response` or `error`,
whichever ends the flow first, the flow's summary (`flm.summary`, shared with
the metrics addon) is handed to the `RequestLogWriter`, which writes it off the
event loop; a full queue drops the record rather than slowing the request.
Health probes (`flm.api.kind` = `health`) are not logged. With
`request_log.enabled: false` nothing is written. The writer starts on
`running` and writes what is queued on `done`. Reads `flm.summary` (and what
`flow_summary` reads); writes `flm.request_log.done`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mitmproxy import http

from flm_gateway.config.request_log_settings import RequestLogConfig
from flm_gateway.observability.flow_summary import summary_of
from flm_gateway.observability.metrics import GatewayMetrics
from flm_gateway.observability.outcomes import status_label
from flm_gateway.proxy.api_kind import ApiKind
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import API_KIND, REQUEST_LOG_DONE
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.requestlog.log_table import request_log_path
from flm_gateway.requestlog.writer import RequestLogWriter

log = logging.getLogger("flm_gateway.requestlog")
access_log = logging.getLogger("flm_gateway.access")


class RequestLog:
    def __init__(self, metrics: GatewayMetrics | None = None) -> None:
        self._metrics = metrics
        self.writer: RequestLogWriter | None = None
        self._enabled = False

    def prepare(self, runtime: Runtime) -> tuple[RequestLogConfig, Path]:
        return runtime.loaded.config.request_log, request_log_path(runtime.loaded)

    def commit(self, prepared: tuple[RequestLogConfig, Path]) -> None:
        settings, path = prepared
        if self.writer is None:  # the database is opened on `running`, off the event loop
            on_drop = self._metrics.request_log_dropped.inc if self._metrics else None
            self.writer = RequestLogWriter(path, settings.retention, settings.max_queue, on_drop)
        self.writer.retention = settings.retention
        self._enabled = settings.enabled

    async def running(self) -> None:
        if self.writer is not None:
            try:
                await self.writer.start()
            except Exception as exc:
                log.error("request log disabled: cannot open the state database: %s", exc)
                self._enabled = False

    async def done(self) -> None:
        if self.writer is not None:
            await self.writer.stop()

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        if REQUEST_LOG_DONE.get(flow) or API_KIND.get(flow) == ApiKind.HEALTH:
            return
        REQUEST_LOG_DONE.set(flow, True)
        try:
            summary = summary_of(flow)
            if self._enabled and self.writer is not None:
                self.writer.submit(summary)
            if access_log.isEnabledFor(logging.DEBUG):
                access_log.debug(
                    "%s %s %s -> %s in %.0f ms",
                    summary.request_id,
                    summary.method,
                    summary.path,
                    status_label(summary.status),
                    (summary.latency or 0.0) * 1000,
                    extra={
                        "request_id": summary.request_id,
                        "listener": summary.listener,
                        "model": summary.model,
                        "engine": summary.engine,
                        "status": summary.status,
                        "error_kind": summary.error_kind,
                    },
                )
        except Exception:  # logging must never break serving
            log.exception("could not record a request in the request log")
