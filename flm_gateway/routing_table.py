"""Which engines may serve a requested model name: the routes of flm.yaml, then discovery.

Routes are tried in file order; the first whose `model` equals the name, or
matches it as a glob (`*`, `?`, `[...]`), wins. A route gives its engines (a
list means replicas, round robin among the healthy ones) followed by its
fallbacks. A name no route matches goes to the engines whose model list
contains it (routing by discovery), round robin among them.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from flm_gateway.config.routes import RouteConfig

_GLOB_CHARS = re.compile(r"[*?\[]")


def is_pattern(model: str) -> bool:
    return bool(_GLOB_CHARS.search(model))


@dataclass(frozen=True)
class CompiledRoute:
    route: RouteConfig
    exact: str | None
    pattern: re.Pattern[str] | None

    def matches(self, model: str) -> bool:
        if self.exact is not None:
            return model == self.exact
        return self.pattern is not None and self.pattern.match(model) is not None


@dataclass(frozen=True)
class RouteMatch:
    """The outcome of a lookup: the route (None for discovery) and engine names in order."""

    route: RouteConfig | None
    primary: tuple[str, ...]
    fallback: tuple[str, ...]


class RoutingTable:
    """Routes compiled once per config."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = tuple(
            CompiledRoute(
                route,
                None if is_pattern(route.model) else route.model,
                re.compile(fnmatch.translate(route.model)) if is_pattern(route.model) else None,
            )
            for route in routes
        )

    def match(self, model: str) -> RouteConfig | None:
        for compiled in self._routes:
            if compiled.matches(model):
                return compiled.route
        return None
