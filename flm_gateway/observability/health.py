"""Liveness and readiness, as `/healthz` and `/readyz` answer them (on every listener,
through the `health_endpoints` addon, and on the admin listener).

`/readyz` is ready when the listeners are up, at least one engine is running-healthy and
the state store answers; its details are counts only (no engine names or addresses).
"""

from __future__ import annotations

from flm_gateway.proxy.runtime import Runtime


def readiness(runtime: Runtime) -> tuple[bool, dict[str, object]]:
    """(ready, details) for the current runtime."""
    states = list(runtime.directory.engines.values())
    up = sum(1 for state in states if state.healthy)
    degraded = sum(1 for state in states if state.reachable and not state.healthy)
    state_ok = runtime.state_usable()
    ready = runtime.listening and up > 0 and state_ok
    return ready, {
        "status": "ready" if ready else "not-ready",
        "listeners_up": runtime.listening,
        "state_store_ok": state_ok,
        "engines_up": up,
        "engines_degraded": degraded,
        "engines_total": len(states),
    }
