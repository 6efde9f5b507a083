"""anomaly: spikes against a baseline, 4xx bursts, model and user-agent churn."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import http

from flm_gateway.addons.anomaly import Anomaly
from flm_gateway.proxy.flow_meta import API_MODEL, AUTH_KEY_ID
from flm_gateway.security.events import events_of
from tests.support.flows import configure
from tests.support.security import flow, loaded

SECURITY = """
anomaly: {window: 10s, spike_factor: 3, spike_min_requests: 10, error_burst: 5,
          model_churn: 3, user_agent_churn: 3}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _finished(
    config,
    status: int = 200,
    model: str | None = None,
    agent: str = "sdk",  # type: ignore[no-untyped-def]
    key: str | None = None,
) -> http.HTTPFlow:
    target = flow(config, ip="192.0.2.50", headers={"user-agent": agent})
    target.response = http.Response.make(status)
    if model:
        API_MODEL.set(target, model)
    if key:
        AUTH_KEY_ID.set(target, key)
    return target


def _types(flows: list[http.HTTPFlow]) -> list[str]:
    return [event.type for f in flows for event in events_of(f)]


async def test_spike_against_baseline(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    clock = Clock()
    addon = Anomaly(clock)
    configure(config, addon)
    for _ in range(6):  # steady: 5 requests per window builds a baseline
        flows = [_finished(config) for _ in range(5)]
        for f in flows:
            addon.response(f)
        assert _types(flows) == []
        clock.now += 10
    burst = [_finished(config) for _ in range(20)]
    for f in burst:
        addon.response(f)
    spikes = [e for f in burst for e in events_of(f) if e.type == "anomaly.rate_spike"]
    assert len(spikes) == 1 and spikes[0].offence == "anomaly"  # once per window
    # Baseline after six windows of 5: 5 * (1 - 0.7**6) = 4.41; 14 is the first count > 3x.
    assert spikes[0].details["requests"] == 14


async def test_error_burst_and_churn_per_key(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    addon = Anomaly(Clock())
    configure(config, addon)
    errors = [_finished(config, 401) for _ in range(5)]
    for f in errors:
        addon.response(f)
    assert _types(errors) == ["anomaly.error_burst"]
    churn = [_finished(config, model=f"m{i}", agent=f"ua{i}", key="key_z") for i in range(3)]
    for f in churn:
        addon.response(f)
    kinds = sorted((e.type, e.details["subject"]) for f in churn for e in events_of(f))
    assert kinds == [
        ("anomaly.model_churn", "ip"),
        ("anomaly.model_churn", "key"),
        ("anomaly.user_agent_churn", "ip"),
        ("anomaly.user_agent_churn", "key"),
    ]


async def test_disabled_and_health(tmp_path: Path) -> None:
    config = loaded("anomaly: {enabled: false, error_burst: 1}", tmp_path)
    addon = Anomaly(Clock())
    configure(config, addon)
    target = _finished(config, 404)
    addon.response(target)
    assert events_of(target) == []
