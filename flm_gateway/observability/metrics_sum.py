"""The metrics of several worker processes as one scrape (`server.workers`).

The supervisor's /metrics reads every worker's text exposition and merges the
samples that have the same name and labels, so a dashboard sees one gateway:
- counters and histograms (`_total`, `_bucket`, `_sum`, `_count`) are summed:
  requests, tokens, rejections of all workers together;
- gauges of load are summed (`SUMMED_GAUGES`: requests in flight, tamper
  findings); the certificate expiry takes the earliest (`MIN_GAUGES`); every
  other gauge takes the largest value: states every worker sees alike (engine up,
  models, audit head, build info, config generation), where the largest is the
  newest or the one worker that sees an engine up.
HELP and TYPE lines come from the first worker that has them; the order is the
first worker's, then samples only others have. Lines that are not samples are
dropped. A worker that does not answer is left out (the supervisor's own
`flm_workers_serving` says how many answered).
"""

from __future__ import annotations

from collections.abc import Iterable

SUMMED_GAUGES = frozenset({"flm_requests_in_flight", "flm_audit_tamper_detected"})
MIN_GAUGES = frozenset({"flm_certificate_expiry_timestamp_seconds"})


def _split_sample(line: str) -> tuple[str, str, float] | None:
    """(metric name, series key with labels, value) of a sample line; None otherwise."""
    series, _, value = line.rpartition(" ")
    if not series:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return series.partition("{")[0], series, number


def _format(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def merge_expositions(pages: Iterable[str]) -> str:
    """One exposition holding every series of `pages`, combined as the module says."""
    kinds: dict[str, str] = {}
    meta: dict[str, list[str]] = {}
    order: list[str] = []  # metric families in first-seen order
    series_of: dict[str, list[str]] = {}
    values: dict[str, float] = {}
    for page in pages:
        for line in page.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                if family not in meta:
                    meta[family], series_of[family] = [], []
                    order.append(family)
                if line not in meta[family]:
                    meta[family].append(line)
                if line.startswith("# TYPE "):
                    kinds[family] = line.rsplit(" ", 1)[1]
                continue
            sample = _split_sample(line)
            if sample is None:
                continue
            name, series, value = sample
            family = _family(name, kinds)
            if family not in series_of:
                meta.setdefault(family, [])
                series_of[family] = []
                order.append(family)
            if series not in values:
                series_of[family].append(series)
                values[series] = value
            else:
                values[series] = _combine(family, kinds.get(family), values[series], value)
    out: list[str] = []
    for family in order:
        out.extend(meta[family])
        out.extend(f"{series} {_format(values[series])}" for series in series_of[family])
    return "\n".join(out) + "\n"


def _family(name: str, kinds: dict[str, str]) -> str:
    """The family a sample belongs to: `x_bucket` of histogram `x` is `x`, and so on."""
    if name in kinds:
        return name
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in kinds:
            return name.removesuffix(suffix)
    return name


def _combine(family: str, kind: str | None, old: float, new: float) -> float:
    if kind != "gauge" or family in SUMMED_GAUGES:
        return old + new
    if family in MIN_GAUGES:
        return min(old, new)
    return max(old, new)
