"""resource_guard: shed new requests under pressure (503 + Retry-After), health exempt."""

from __future__ import annotations

import time
from pathlib import Path

from flm_gateway.addons.resource_guard import ResourceGuard, Usage
from flm_gateway.state.store import AuditQuery
from tests.support.flows import configure, error_of
from tests.support.security import flow, loaded, opened_service, run_hooks


def _usage(cpu: float = 10.0, memory: float = 10.0, rss: int = 10 << 20) -> Usage:
    return Usage(
        host_cpu=cpu, host_memory=memory, process_cpu=1.0, process_memory=rss, at=time.monotonic()
    )


async def test_sheds_under_pressure_and_recovers(tmp_path: Path) -> None:
    config = loaded(
        "resources: {max_host_cpu_percent: 90, max_process_memory: 1GiB, retry_after: 7s}",
        tmp_path,
    )
    with opened_service(config) as service:
        guard = ResourceGuard(service)
        configure(config, guard)
        guard.observe(_usage(cpu=50))
        calm = flow(config)
        await run_hooks([guard], calm, ("requestheaders",))
        assert calm.response is None
        guard.observe(_usage(cpu=97))
        busy = flow(config)
        await run_hooks([guard], busy, ("requestheaders",))
        status, error = error_of(busy)
        assert (status, error["code"]) == (503, "overloaded")
        assert busy.response is not None and busy.response.headers["retry-after"] == "7"
        health = flow(config, path="/readyz")
        await run_hooks([guard], health, ("requestheaders",))
        assert health.response is None
        guard.observe(_usage(rss=2 << 30))
        assert guard.overloaded() == "gateway memory 2147483648 bytes above 1073741824 bytes"
        guard.observe(_usage())
        assert guard.overloaded() is None
        service.flush_sync()
        types = [r.event.type for r in service.call_sync(lambda s: s.query_audit(AuditQuery()))]
        assert types == ["resource.pressure", "resource.recovered"]


async def test_off_by_default_and_real_sampling(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        guard = ResourceGuard(service)
        configure(config, guard)
        assert not guard.enabled
        usage = guard.sample()
        assert usage.process_memory > 0 and 0 <= usage.host_memory <= 100
        guard.observe(_usage(cpu=100))
        assert guard.overloaded() is None
