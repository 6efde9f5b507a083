"""docs/operations.md and docs/grafana-dashboard.json name only metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from flm_gateway.observability.metrics import GatewayMetrics

ROOT = Path(__file__).parents[1]
NAME = re.compile(r"\bflm_[a-z_]+\b")


def exported_samples() -> set[str]:
    text = GatewayMetrics().exposition().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count"))
    return names


def test_dashboard_queries_use_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert used and used <= exported_samples()


def test_every_metric_is_documented() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    documented = set(NAME.findall(doc))
    text = GatewayMetrics().exposition().decode()
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # prometheus_client's creation timestamps
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in documented, name


def documented_labels() -> dict[str, set[str]]:
    """metric name -> the label names its row in operations.md's table gives."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| `(flm_[a-z_]+)` \| \w+ \|([^|]*)\|", doc, re.MULTILINE)
    # A label's values may follow it in parentheses: `type` (`prompt`, `completion`).
    return {
        name: set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", labels)))
        for name, labels in rows
    }


def test_documented_labels_are_the_exported_ones() -> None:
    exported = {}
    for family in GatewayMetrics()._families:
        name = family.name + ("_total" if getattr(family, "kind", "") == "counter" else "")
        exported[name] = set(family.label_names)
    documented = documented_labels()
    assert documented.keys() == exported.keys()
    for name, labels in exported.items():
        assert documented[name] == labels, name
