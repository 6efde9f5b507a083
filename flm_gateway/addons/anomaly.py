"""Anomaly detection per client address and per key: rate spikes, 4xx bursts, churn.

Policy (on `response` and `error`, observing every finished flow; never
rejects by itself): for each subject (the client address, and the key if any)
requests are counted in windows of `security.anomaly.window`, against a moving
baseline (exponentially weighted average of past windows, decaying over idle
ones; IPv6 clients are grouped by `security.ipv6_prefix`). Within a window:
- `anomaly.rate_spike` (medium): requests above `spike_min_requests` and above
  `spike_factor` times the baseline;
- `anomaly.error_burst` (medium): at least `error_burst` answers of 4xx;
- `anomaly.model_churn` (low): at least `model_churn` distinct models asked for;
- `anomaly.user_agent_churn` (low): at least `user_agent_churn` distinct User-Agents.
Each kind is reported at most once per subject and window, as a security event
with offence `anomaly` (it blocks only if `auto_block.anomalies` > 0). Health
checks are not counted. State is in memory, bounded to `MAX_SUBJECTS` (least
recently seen forgotten first). Reads `flm.client_ip`, `flm.auth.key_id`, `flm.api.model`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from mitmproxy import http

from flm_gateway.config.security_settings import AnomalySettings
from flm_gateway.core.netset import client_subject
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import API_MODEL, AUTH_KEY_ID
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.events import Offence, record
from flm_gateway.security.policies import client_ip, is_health_check

MAX_SUBJECTS = 50_000
BASELINE_WEIGHT = 0.3
MAX_TRACKED_VALUES = 64
"""Distinct models / user agents remembered per window (enough to pass any threshold)."""


@dataclass
class Window:
    start: float
    requests: int = 0
    errors: int = 0
    models: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    reported: set[str] = field(default_factory=set)


@dataclass
class SubjectStats:
    window: Window
    baseline: float = 0.0
    history: int = 0
    """Completed windows folded into the baseline."""

    def roll(self, now: float, length: float) -> None:
        elapsed = int((now - self.window.start) // length)
        if elapsed <= 0:
            return
        self.baseline = (
            1 - BASELINE_WEIGHT
        ) * self.baseline + BASELINE_WEIGHT * self.window.requests
        if elapsed > 1:
            self.baseline *= (1 - BASELINE_WEIGHT) ** (elapsed - 1)
        self.history += elapsed
        self.window = Window(self.window.start + elapsed * length)


@dataclass(frozen=True)
class Finding:
    kind: str
    severity: Severity
    details: dict[str, object]


def _first(window: Window, kind: str) -> bool:
    """Mark `kind` reported in `window`; True the first time (each finding is reported once)."""
    if kind in window.reported:
        return False
    window.reported.add(kind)
    return True


def observe(
    stats: SubjectStats,
    settings: AnomalySettings,
    status: int | None,
    model: str | None,
    agent: str | None,
) -> list[Finding]:
    """Count one finished request into `stats.window`; the findings it triggers (once each)."""
    window = stats.window
    window.requests += 1
    if status is not None and 400 <= status < 500:
        window.errors += 1
    if model and len(window.models) < MAX_TRACKED_VALUES:
        window.models.add(model)
    if agent and len(window.agents) < MAX_TRACKED_VALUES:
        window.agents.add(agent)
    # Conditions first, details only for a new finding: this runs on every response.
    findings: list[Finding] = []
    if (
        window.requests >= settings.spike_min_requests
        and window.requests > settings.spike_factor * stats.baseline
        and _first(window, "rate_spike")
    ):
        spike: dict[str, object] = {
            "requests": window.requests,
            "baseline": round(stats.baseline, 2),
        }
        findings.append(Finding("rate_spike", Severity.MEDIUM, spike))
    if window.errors >= settings.error_burst and _first(window, "error_burst"):
        findings.append(Finding("error_burst", Severity.MEDIUM, {"errors_4xx": window.errors}))
    if len(window.models) >= settings.model_churn and _first(window, "model_churn"):
        findings.append(Finding("model_churn", Severity.LOW, {"models": len(window.models)}))
    if len(window.agents) >= settings.user_agent_churn and _first(window, "user_agent_churn"):
        agents: dict[str, object] = {"user_agents": len(window.agents)}
        findings.append(Finding("user_agent_churn", Severity.LOW, agents))
    return findings


class Anomaly:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._settings = AnomalySettings()
        self._ipv6_prefix = 64
        self._subjects: OrderedDict[tuple[str, str], SubjectStats] = OrderedDict()

    def prepare(self, runtime: Runtime) -> tuple[AnomalySettings, int]:
        security = runtime.loaded.config.security
        return security.anomaly, security.ipv6_prefix

    def commit(self, prepared: tuple[AnomalySettings, int]) -> None:
        self._settings, self._ipv6_prefix = prepared

    def _stats(self, subject: tuple[str, str], now: float) -> SubjectStats:
        stats = self._subjects.get(subject)
        if stats is None:
            stats = SubjectStats(Window(now))
            self._subjects[subject] = stats
            if len(self._subjects) > MAX_SUBJECTS:
                self._subjects.popitem(last=False)
        else:
            self._subjects.move_to_end(subject)
            stats.roll(now, self._settings.window)
        return stats

    def _observe(self, flow: http.HTTPFlow) -> None:
        settings = self._settings
        if not settings.enabled or is_health_check(flow):
            return
        now = self._clock()
        status = flow.response.status_code if flow.response is not None else None
        model = API_MODEL.get(flow)
        agent = flow.request.headers.get("user-agent")
        subjects = [("ip", client_subject(client_ip(flow), self._ipv6_prefix))]
        key_id = AUTH_KEY_ID.get(flow)
        if key_id is not None:
            subjects.append(("key", str(key_id)))
        for subject in subjects:
            for finding in observe(self._stats(subject, now), settings, status, model, agent):
                record(
                    flow,
                    f"anomaly.{finding.kind}",
                    finding.severity,
                    Offence.ANOMALY,
                    subject=subject[0],
                    **finding.details,
                )

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._observe(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._observe(flow)
