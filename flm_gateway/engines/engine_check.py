"""One full check of an engine: the adapter's health signal plus its model list.

Shared by the running gateway (`EngineDirectory`), `engines detect` and
`models list`, so all three judge an engine the same way:
- the adapter's `check_health` decides unreachable / degraded / healthy;
- an engine that answers is asked for its models (unless the caller already has
  a fresh list); a healthy engine whose model list fails is degraded (often a
  wrong `api_key`), and so is one that lists no model while its config declares
  none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from flm_gateway.engines.adapter import (
    EngineAdapter,
    EngineClient,
    EngineUnavailable,
    HealthReport,
    HealthState,
    ModelInfo,
)


async def check_engine(
    adapter: EngineAdapter,
    client: EngineClient,
    known: Sequence[ModelInfo] | None = None,
    declared: Sequence[str] = (),
) -> HealthReport:
    """Check the engine; `known`: a model list still fresh enough (None: fetch it).

    The report's `models` is the fetched list, or None when nothing was fetched
    (unreachable, `known` given, or the list failed). Never raises.
    """
    report = await adapter.check_health(client)
    if report.state is HealthState.UNREACHABLE:
        return report
    models = report.models
    if models is None and known is None:
        try:
            models = tuple(await adapter.list_models(client))
        except EngineUnavailable as exc:
            if report.state is HealthState.HEALTHY:
                return replace(report, state=HealthState.DEGRADED, detail=f"model list: {exc}")
            return report
    current = models if models is not None else known or ()
    if report.state is HealthState.HEALTHY and not current and not declared:
        report = replace(report, state=HealthState.DEGRADED, detail="the engine lists no model")
    return replace(report, models=models)
