"""Shed load when the host or the gateway process is under CPU or memory pressure.

Policy: a background task samples (psutil, every `security.resources.sample_interval`)
host CPU and memory use and this process's CPU and resident memory. While any
sample is above its configured threshold (`max_host_cpu_percent`,
`max_host_memory_percent`, `max_process_cpu_percent`, `max_process_memory`;
all unset by default: an inference host is often busy by design), new requests
get 503 `overloaded` with `Retry-After: security.resources.retry_after`; the
health endpoints are exempt. Requests already admitted continue. Entering and
leaving pressure are audited (`resource.pressure`, `resource.recovered`), not
each shed request. Hooks only read the last sample; no system call per request.
If sampling fails, the last sample ages out after three intervals and the
guard stops shedding (it protects capacity, not access: failing open here
cannot let anyone in who would otherwise be refused).
The process memory it compares is what is really in use: every interval, whether
or not a threshold is set, the sampler runs `flm_gateway.observability.memory.Reclaimer`, which
collects finished requests' cyclic garbage and returns freed pages to the system
once the resident size has grown, so RSS falls back after a burst of large
requests and a memory threshold stops shedding when the attacker leaves.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

import psutil
from mitmproxy import http

from flm_gateway.config.security_settings import ResourceSettings
from flm_gateway.core.errors import error_response
from flm_gateway.core.severity import Severity
from flm_gateway.observability.memory import Reclaimer
from flm_gateway.proxy.background import BackgroundTask
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import RESOURCE_SHED
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.policies import is_health_check
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import AuditEvent

log = logging.getLogger("flm_gateway.security")


@dataclass(frozen=True)
class Usage:
    host_cpu: float
    host_memory: float
    process_cpu: float
    process_memory: int
    at: float


def pressure(usage: Usage, settings: ResourceSettings) -> str | None:
    """Which threshold `usage` passes, described, or None."""
    checks = (
        (settings.max_host_cpu_percent, usage.host_cpu, "host CPU", "%"),
        (settings.max_host_memory_percent, usage.host_memory, "host memory", "%"),
        (settings.max_process_cpu_percent, usage.process_cpu, "gateway CPU", "%"),
        (settings.max_process_memory, usage.process_memory, "gateway memory", " bytes"),
    )
    for limit, value, what, unit in checks:
        if limit is not None and value > limit:
            return f"{what} {value:.0f}{unit} above {limit:.0f}{unit}"
    return None


class ResourceGuard:
    def __init__(self, state: StateService) -> None:
        self._state = state
        self._settings = ResourceSettings()
        self._process = psutil.Process()
        self._reclaimer = Reclaimer(lambda: int(self._process.memory_info().rss))
        self._usage: Usage | None = None
        self._overloaded: str | None = None
        self._background = BackgroundTask("flm-resource-sampler", self._sampler)

    def prepare(self, runtime: Runtime) -> ResourceSettings:
        return runtime.loaded.config.security.resources

    def commit(self, prepared: ResourceSettings) -> None:
        self._settings = prepared

    @property
    def enabled(self) -> bool:
        s = self._settings
        return any(
            limit is not None
            for limit in (
                s.max_host_cpu_percent,
                s.max_host_memory_percent,
                s.max_process_cpu_percent,
                s.max_process_memory,
            )
        )

    def sample(self) -> Usage:
        """Read usage now (cpu_percent compares with the previous call: non-blocking)."""
        return Usage(
            host_cpu=psutil.cpu_percent(None),
            host_memory=psutil.virtual_memory().percent,
            process_cpu=self._process.cpu_percent(None),
            process_memory=self._process.memory_info().rss,
            at=time.monotonic(),
        )

    def observe(self, usage: Usage) -> None:
        """Take a sample into account (the sampler calls it; tests may too)."""
        self._usage = usage
        reason = pressure(usage, self._settings)
        if reason != self._overloaded and (reason is None) != (self._overloaded is None):
            event = "resource.pressure" if reason else "resource.recovered"
            log.warning("%s: %s", event, reason or "usage back under the thresholds")
            self._state.audit(
                AuditEvent(
                    event,
                    Severity.MEDIUM if reason else Severity.INFO,
                    actor="gateway",
                    details={"reason": reason or ""},
                )
            )
        self._overloaded = reason

    def running(self) -> None:
        self._background.start()

    async def done(self) -> None:
        await self._background.stop()

    async def _sampler(self) -> None:
        self.sample()  # primes psutil's CPU counters
        while True:
            await asyncio.sleep(self._settings.sample_interval)
            try:
                self._reclaimer.tick()
            except (psutil.Error, OSError) as exc:
                log.warning("memory reclaim failed: %s", exc)
            if not self.enabled:
                self._overloaded, self._usage = None, None
                continue
            try:
                self.observe(self.sample())
            except (psutil.Error, OSError) as exc:
                log.warning("resource sampling failed: %s", exc)

    def overloaded(self) -> str | None:
        usage = self._usage
        if usage is None or not self.enabled:
            return None
        if time.monotonic() - usage.at > 3 * max(self._settings.sample_interval, 1.0):
            return None
        return self._overloaded

    @fail_closed(503)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or is_health_check(flow):
            return
        reason = self.overloaded()
        if reason is None:
            return
        RESOURCE_SHED.set(flow, reason)
        flow.response = error_response(
            503,
            "The gateway is overloaded; retry later.",
            code="overloaded",
            headers={"retry-after": str(max(1, math.ceil(self._settings.retry_after)))},
        )
