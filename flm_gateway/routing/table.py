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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flm_gateway.config.route_settings import FallbackTarget, RouteConfig

_GLOB_CHARS = re.compile(r"[*?\[]")


def is_pattern(model: str) -> bool:
    return bool(_GLOB_CHARS.search(model))


def route_fallbacks(route: RouteConfig) -> list[FallbackTarget]:
    """The engines tried after the route's own, in order: its fallbacks that are not
    among its engines (a replica is a candidate once, as a replica)."""
    return [target for target in route.fallback_targets if target.engine not in route.engines]


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
        """The first route (in file order) whose `model` is `model` or a glob matching it."""
        for compiled in self._routes:
            if compiled.matches(model):
                return compiled.route
        return None

    def public_names(
        self,
        engine: str,
        model_id: str,
        aliases: Sequence[str] = (),
        fallback_model: Callable[[str, str], str] = lambda engine, upstream: upstream,
    ) -> list[str]:
        """The names a client can ask for to reach `model_id` on `engine`.

        The id itself (or one of the engine's `aliases` for it), unless a route
        takes that name elsewhere; and every exact route name whose engines or
        fallbacks send that model to `engine`. Glob routes add no name.
        `fallback_model(engine, upstream)` is the model a bare-name fallback engine
        is asked for (routing's choice, which depends on the engine's model list).
        """
        known = {model_id, *aliases}
        names: list[str] = []

        def reaches(route: RouteConfig, asked: str) -> bool:
            upstream = route.upstream_model or asked
            targets = {upstream for name in route.engines if name == engine}
            targets |= {
                target.upstream_model or fallback_model(engine, upstream)
                for target in route_fallbacks(route)
                if target.engine == engine
            }
            return bool(targets & known)

        own_route = self.match(model_id)
        if own_route is None or reaches(own_route, model_id):
            names.append(model_id)
        for compiled in self._routes:
            route = compiled.route
            if compiled.exact is None or route.model in names:
                continue
            if self.match(route.model) is route and reaches(route, route.model):
                names.append(route.model)
        return names
