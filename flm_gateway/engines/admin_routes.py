"""An engine's admin and management routes, and the lookup that finds one in a path.

Each adapter (`engines/<kind>.py`) declares the routes of its engine that manage
the engine rather than use it (pull or delete models, load/unload them, save slots,
sleep, RPC, the engine's cloud account), taken from the engine's own route table;
`docs/engines.md` lists them with their sources. A passthrough listener refuses them
unless `allow_admin_endpoints: true`.

`AdminRoutes.match(method, path)` expects the canonical path
(`security.target.canonical_target`: decoded once, dot segments resolved, single
slashes) and then ignores case and a trailing slash, since some engines match
case-insensitively (Express-style routers) or redirect `/x/` to `/x` (gin,
starlette). A route covers its path and everything below it (`/api/blobs` covers
`/api/blobs/sha256:...`); the most specific declared route decides, so `/models`
may stay open for GET while `/models/load` is admin for every method.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

READ_ONLY = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class AdminRoute:
    """One admin route: `path` and everything below it, for every method but `open_methods`."""

    path: str
    """Lower case, starting with `/`, no trailing slash."""
    what: str
    """What it does, for docs and logs (e.g. "download a model")."""
    open_methods: frozenset[str] = field(default_factory=frozenset)
    """Methods for which the path is an ordinary, allowed route (e.g. GET /props)."""

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path != self.path.lower().rstrip("/"):
            raise ValueError(f"admin route {self.path!r} must be lower case, '/'-rooted")


class AdminRoutes:
    """A frozen set of admin routes and their lookup (a few dict lookups per path)."""

    def __init__(self, routes: Iterable[AdminRoute]) -> None:
        by_path = {route.path: route for route in routes}
        self._by_path: Mapping[str, AdminRoute] = MappingProxyType(by_path)

    @property
    def routes(self) -> tuple[AdminRoute, ...]:
        return tuple(self._by_path.values())

    def match(self, method: str, path: str) -> AdminRoute | None:
        """The admin route canonical `path` (no query) addresses with `method`, or None."""
        key = path.lower().rstrip("/")
        while key:
            route = self._by_path.get(key)
            if route is not None:
                return None if method in route.open_methods else route
            key = key[: key.rfind("/")]
        return None
