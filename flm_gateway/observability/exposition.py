"""Counters, gauges and histograms in Prometheus' text exposition format (version 0.0.4).

The few primitives the gateway's metrics need, without prometheus_client (whose
import costs the idle gateway about 2 MiB for features it does not use). A metric
family has fixed label names; `labels(*values)` returns the child for one set of
values, created on first use; an unlabelled metric has its one child from the
start, so it is exposed (at 0) before its first update. Updates take a lock per
family, so threads other than the event loop's (the request log writer) may
update them. `render` writes the families in order; a `ScrapedGauge` is read at
render time.

Counters get the `_total` suffix; histograms the `_bucket` (cumulative, `le`
label, `+Inf` last), `_sum` and `_count` series. No `_created` series.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Sequence[str], float]
"""Label values and the value of one sample."""


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Family:
    """A metric name, its help text, label names, and one child per label-value tuple."""

    kind = ""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)
        self._lock = threading.Lock()

    def header(self, exposed_name: str) -> list[str]:
        escaped = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return [f"# HELP {exposed_name} {escaped}", f"# TYPE {exposed_name} {self.kind}"]

    def _check(self, values: tuple[str, ...]) -> None:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {values}")


class _Value:
    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)


class _Scalar(_Family):
    """A counter or a gauge: one float per label-value tuple."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self._children: dict[tuple[str, ...], _Value] = {}
        if not self.label_names:
            self.labels()  # an unlabelled metric is exposed from the start, at 0

    def labels(self, *values: str) -> _Value:
        child = self._children.get(values)
        if child is None:
            self._check(values)
            with self._lock:
                child = self._children.setdefault(values, _Value(self._lock))
        return child

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def render(self) -> list[str]:
        name = self.name + ("_total" if self.kind == "counter" else "")
        lines = self.header(name)
        for values, child in list(self._children.items()):
            label_text = _label_text(self.label_names, values)
            lines.append(f"{name}{label_text} {format_value(child.value)}")
        return lines


class Counter(_Scalar):
    kind = "counter"


class Gauge(_Scalar):
    kind = "gauge"

    def set(self, value: float) -> None:
        self.labels().set(value)


class _Buckets:
    def __init__(self, lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        self._lock = lock
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect_left(self._bounds, value)  # the first bound >= value (le is inclusive)
        with self._lock:
            self.counts[index] += 1
            self.sum += value


class Histogram(_Family):
    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._children: dict[tuple[str, ...], _Buckets] = {}
        if not self.label_names:
            self.labels()

    def labels(self, *values: str) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            self._check(values)
            with self._lock:
                child = self._children.setdefault(values, _Buckets(self._lock, self.bounds))
        return child

    def render(self) -> list[str]:
        lines = self.header(self.name)
        names = (*self.label_names, "le")
        for values, child in list(self._children.items()):
            with self._lock:
                counts, total = list(child.counts), child.sum
            cumulative = 0
            for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
                cumulative += count
                label_text = _label_text(names, (*values, format_value(bound)))
                lines.append(f"{self.name}_bucket{label_text} {cumulative}")
            label_text = _label_text(self.label_names, values)
            lines.append(f"{self.name}_sum{label_text} {format_value(total)}")
            lines.append(f"{self.name}_count{label_text} {cumulative}")
        return lines


class ScrapedGauge(_Family):
    """A gauge whose samples `read()` returns at render time (state, not events)."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str],
        read: Callable[[], Iterable[Sample]],
    ) -> None:
        super().__init__(name, help_text, label_names)
        self._read = read

    def render(self) -> list[str]:
        lines = self.header(self.name)
        for values, value in self._read():
            lines.append(
                f"{self.name}{_label_text(self.label_names, values)} {format_value(value)}"
            )
        return lines


Family = Counter | Gauge | Histogram | ScrapedGauge


def render(families: Iterable[Family]) -> bytes:
    """The exposition of `families`, in order."""
    lines = [line for family in families for line in family.render()]
    return ("\n".join(lines) + "\n").encode()
