"""Validation in stages: the parts of flm.yaml that parsed still get their cross-field checks.

pydantic rejects the whole file for one wrong item, so the reference checks
(`semantic.check_semantics`: unknown engines, duplicate binds, key scopes...) could
not run until every schema error was fixed, and a broken file took several rounds.
Instead each schema error marks the smallest *unit* that holds it and that the file
can do without:
- an element of `listeners:`, `engines:`, `routes:` or `security.keys:`;
- else the key under a top-level section (`server.limits`, `security.cors`, the
  profile `egress.NAME`), which then takes its default;
- else the top-level key itself.
The units are set aside and the rest validated again (their own errors are already
reported), until it validates or it cannot do without a unit (`listeners:` itself).
The cross-field checks then run on what was kept, and their paths (and the
`listeners[2]` a message names) are mapped back to the file's own indices.
Never reported a second time: a problem inside a unit set aside, and a reference to
a name such a unit defined (a route naming an engine whose url was invalid is
reported once, at the url).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from flm_gateway.config.problems import Path_

ITEM_LISTS: tuple[Path_, ...] = (("listeners",), ("engines",), ("routes",), ("security", "keys"))
"""Lists whose elements are units of their own."""
NAMED_SECTIONS = ("egress",)
"""Top-level sections whose keys are names others refer to (egress profiles)."""
NAME_FIELDS = ("name", "model", "id")
"""The field that names an element of an item list (routes are named by their model)."""
NAME_KEYED = ("engines", "max_tokens_per_route")
"""Mappings keyed by a name defined elsewhere (`security.resources.engines.NAME`)."""
MAX_ROUNDS = 4

_INDEXED = re.compile(r"\b(listeners|engines|routes|security\.keys)\[(\d+)\]")


def unit_of(path: Path_) -> Path_:
    """The unit a schema error at `path` sets aside."""
    for items in ITEM_LISTS:
        size = len(items)
        if path[:size] == items and len(path) > size and isinstance(path[size], int):
            return path[: size + 1]
    return path[:2]


def _get(data: Any, path: Path_) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


@dataclass(frozen=True)
class Salvage:
    """The document without its broken units, and how to map its paths back."""

    data: dict[str, Any]
    original_data: dict[str, Any]
    removed: frozenset[Path_]
    kept: dict[Path_, list[int]]
    """For each item list: the original index of each element that was kept."""

    def original(self, path: Path_) -> Path_:
        """A path in `data` as a path in the file."""
        for items, indices in self.kept.items():
            size = len(items)
            index = path[size] if path[:size] == items and len(path) > size else None
            if isinstance(index, int) and 0 <= index < len(indices):
                return (*items, indices[index], *path[size + 1 :])
        return path

    def original_message(self, message: str) -> str:
        """`listeners[1]` in a message of the cross-field checks, as the file numbers it."""

        def renumber(match: re.Match[str]) -> str:
            items = tuple(match.group(1).split("."))
            indices = self.kept.get(items)
            index = int(match.group(2))
            if indices is None or index >= len(indices):
                return match.group(0)
            return f"{match.group(1)}[{indices[index]}]"

        return _INDEXED.sub(renumber, message)

    def names(self) -> frozenset[str]:
        """Names defined by the units set aside."""
        found: set[str] = set()
        for unit in self.removed:
            if isinstance(unit[-1], int):
                element = _get(self.original_data, unit)
                if isinstance(element, dict):
                    found.update(
                        value for key in NAME_FIELDS if isinstance(value := element.get(key), str)
                    )
            elif len(unit) == 2 and unit[0] in NAMED_SECTIONS and isinstance(unit[1], str):
                found.add(unit[1])
        return frozenset(found)

    def hides(self, path: Path_) -> bool:
        """Whether a cross-field problem at `path` (in the file) was already reported."""
        if any(path[: len(unit)] == unit for unit in self.removed):
            return True
        names = self.names()
        if len(path) >= 2 and path[-2] in NAME_KEYED and path[-1] in names:
            return True
        value = _get(self.original_data, path)
        if isinstance(value, dict):
            value = value.get("engine")
        return isinstance(value, str) and value in names


def set_aside(data: dict[str, Any], removed: frozenset[Path_]) -> Salvage:
    """`data` without the units in `removed` (none of which is the whole document)."""
    result = copy.deepcopy(data)
    for unit in sorted((u for u in removed if not isinstance(u[-1], int)), key=len, reverse=True):
        parent = _get(result, unit[:-1])
        if isinstance(parent, dict):
            parent.pop(unit[-1], None)
    kept: dict[Path_, list[int]] = {}
    for items in ITEM_LISTS:
        elements = _get(result, items)
        if not isinstance(elements, list):
            continue
        indices = [i for i in range(len(elements)) if (*items, i) not in removed]
        parent = _get(result, items[:-1])  # a dict: it holds `elements`
        parent[items[-1]] = [elements[i] for i in indices]
        kept[items] = indices
    return Salvage(result, data, removed, kept)


def can_set_aside(units: frozenset[Path_]) -> bool:
    """The file cannot do without the whole document or its listeners."""
    return all(unit and unit != ("listeners",) for unit in units)
