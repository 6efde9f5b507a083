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

    def public_names(self, engine: str, model_id: str, aliases: Sequence[str] = ()) -> list[str]:
        """The names a client can ask for to reach `model_id` on `engine`.

        The id itself (or one of the engine's `aliases` for it), unless a route
        takes that name elsewhere; and every exact route name whose engines or
        fallbacks send that model to `engine`. Glob routes add no name.
        """
        known = {model_id, *aliases}
        names: list[str] = []
        own_route = self.match(model_id)
        if own_route is None or self._targets(own_route, model_id, engine) & known:
            names.append(model_id)
        for compiled in self._routes:
            route = compiled.route
            if compiled.exact is None or route.model in names:
                continue
            if (
                self.match(route.model) is route
                and self._targets(route, route.model, engine) & known
            ):
                names.append(route.model)
        return names

    @staticmethod
    def _targets(route: RouteConfig, asked: str, engine: str) -> set[str]:
        """The upstream model names `route` sends to `engine` for a request naming `asked`."""
        upstream = route.upstream_model or asked
        names = {upstream for name in route.engines if name == engine}
        names |= {
            target.upstream_model or upstream
            for target in route.fallback_targets
            if target.engine == engine
        }
        return names
