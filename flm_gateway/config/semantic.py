"""Cross-field rules of flm.yaml that a schema cannot express.

Each rule yields (path, message) pairs; the loader maps paths to file positions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flm_gateway.bodies import BodyError
from flm_gateway.bodies.schema import JSON_FIELDS, check_defaults
from flm_gateway.config.binds import ANY_ADDRESS, ANY_IPV4, bind_host_problem, binds_overlap
from flm_gateway.config.egress_settings import check_egress
from flm_gateway.config.engine_settings import EngineKind
from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.route_settings import Balance, WeightedEngine
from flm_gateway.config.sampling_settings import TYPED_DEFAULTS
from flm_gateway.config.security_checks import check_security
from flm_gateway.config.state_settings import StateBackend
from flm_gateway.config.tls_checks import check_tls
from flm_gateway.config.types import format_host_port, is_loopback_host

Problem = tuple[tuple[str | int, ...], str]
Locate = Callable[[tuple[str | int, ...]], str]
"""Where a path is in the file ("flm.yaml:4:11"), for messages that name a second place."""


def check_semantics(config: GatewayConfig, locate: Locate = lambda path: "") -> list[Problem]:
    """Every cross-field problem in `config`, in file order of the sections."""
    return [
        *_unique_names(config),
        *_listener_binds(config, locate),
        *_engine_references(config),
        *_route_weights(config),
        *_route_defaults(config),
        *_listener_auth(config),
        *_admin_bind(config),
        *_workers(config),
        *check_tls(config),
        *check_security(config),
        *check_egress(config.egress, config.engines),
    ]


def _unique_names(config: GatewayConfig) -> Iterator[Problem]:
    sections = (
        ("listeners", [listener.name for listener in config.listeners]),
        ("engines", [engine.name for engine in config.engines]),
    )
    for section, names in sections:
        seen: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in seen:
                yield (
                    (section, index, "name"),
                    f"{name!r} is already the name of {section}[{seen[name]}]",
                )
            seen.setdefault(name, index)


def _listener_binds(config: GatewayConfig, locate: Locate) -> Iterator[Problem]:
    """Binds are IP literals or localhost, and no two are ambiguous (see `config.binds`)."""
    listeners = config.listeners
    for index, listener in enumerate(listeners):
        path = ("listeners", index, "bind")
        if problem := bind_host_problem(listener.bind[0]):
            yield path, problem
            continue
        for earlier, other in enumerate(listeners[:index]):
            if bind_host_problem(other.bind[0]) or not binds_overlap(listener.bind, other.bind):
                continue
            mine, theirs = format_host_port(listener.bind), format_host_port(other.bind)
            where = locate(("listeners", earlier, "bind"))
            named = f"listeners[{earlier}] ({other.name!r}{', ' + where if where else ''})"
            if mine == theirs:
                yield path, f"{mine!r} of {listener.name!r} is already bound by {named}"
            else:
                shared = _shared_address(listener.bind, other.bind)
                yield (
                    path,
                    f"{mine!r} of {listener.name!r} overlaps {theirs!r} of {named}: a "
                    f"connection to {shared} would match both listeners; use one listener "
                    "or different ports",
                )
            break


def _shared_address(a: tuple[str, int], b: tuple[str, int]) -> str:
    """An address both binds cover, for the message (the more specific bind)."""
    for bind in (a, b):
        if bind[0] not in (ANY_IPV4, ANY_ADDRESS):
            return format_host_port(bind)
    return f"any IPv4 address on port {a[1]}"


def _engine_references(config: GatewayConfig) -> Iterator[Problem]:
    names = [engine.name for engine in config.engines]
    choices = ", ".join(names) if names else "none are defined under engines:"
    kinds = {engine.name: engine.kind for engine in config.engines}
    for index, route in enumerate(config.routes):
        for position, name in enumerate(route.engines):
            if name not in kinds:
                path: tuple[str | int, ...] = ("routes", index, "engine")
                if isinstance(route.engine, list):
                    path = (*path, position)
                    if not isinstance(route.engine[position], str):
                        path = (*path, "engine")
                yield path, f"unknown engine {name!r}; defined engines: {choices}"
        for position, target in enumerate(route.fallback_targets):
            if target.engine not in kinds:
                yield (
                    ("routes", index, "fallback", position),
                    f"unknown engine {target.engine!r}; defined engines: {choices}",
                )
    for index, listener in enumerate(config.listeners):
        if listener.passthrough is not None and listener.passthrough not in kinds:
            yield (
                ("listeners", index, "passthrough"),
                f"unknown engine {listener.passthrough!r}; defined engines: {choices}",
            )
        if listener.allow_admin_endpoints and (
            listener.passthrough is None or kinds.get(listener.passthrough) == EngineKind.OPENAI
        ):
            yield (
                ("listeners", index, "allow_admin_endpoints"),
                "only meaningful with passthrough to an ollama, vllm, lmstudio or llamacpp "
                "engine (an openai engine has no admin routes)",
            )


def _route_weights(config: GatewayConfig) -> Iterator[Problem]:
    """A weight only `balance: weighted` reads would be silently ignored: refuse it."""
    for index, route in enumerate(config.routes):
        if route.balance is Balance.WEIGHTED or isinstance(route.engine, str):
            continue
        for position, item in enumerate(route.engine):
            if isinstance(item, WeightedEngine) and item.weight != 1:
                yield (
                    ("routes", index, "engine", position, "weight"),
                    f"weight {item.weight} is used only with balance: weighted "
                    f"(this route balances {route.balance.value})",
                )


def _route_defaults(config: GatewayConfig) -> Iterator[Problem]:
    """A route default is sent as if the client had: the client's types and spellings;
    `extra` holds only what the typed keys do not."""
    for index, route in enumerate(config.routes):
        path: tuple[str | int, ...] = ("routes", index, "defaults")
        extra = route.defaults.extra
        redefined = sorted(TYPED_DEFAULTS & extra.keys())
        for key in redefined:
            yield (
                (*path, "extra", key),
                f"{key!r} is a typed default: set defaults.{key}, not defaults.extra.{key}",
            )
        if redefined:
            continue
        for kind in JSON_FIELDS:
            try:
                check_defaults(kind, route.defaults.fields(kind))
            except BodyError as error:
                key = (error.param or "").split(".", 1)[0].split("[", 1)[0]
                if key in extra:
                    yield (*path, "extra", key), error.message
                else:
                    yield (*path, key) if key in TYPED_DEFAULTS else path, error.message
                break


def _listener_auth(config: GatewayConfig) -> Iterator[Problem]:
    for index, listener in enumerate(config.listeners):
        host = listener.bind[0]
        if listener.auth is None and not is_loopback_host(host):
            yield (
                ("listeners", index, "bind"),
                f"{format_host_port(listener.bind)!r} is reachable from other machines and the "
                "listener has no authentication; set auth: api-key, or auth: none to accept "
                "that risk explicitly",
            )


def _workers(config: GatewayConfig) -> Iterator[Problem]:
    """Several workers share rate limits only through Redis: SQLite keeps the buckets in each
    process, so N workers would allow N times every limit (a key's own limits included,
    which live in the store where no config check sees them)."""
    workers = config.server.workers
    if workers != 1 and config.state.backend is StateBackend.SQLITE:
        yield (
            ("server", "workers"),
            f"{workers!r}: more than one worker needs state.backend: redis (with sqlite each "
            "worker would keep its own rate-limit buckets and allow N times every limit); "
            "set state.backend: redis, or server.workers: 1",
        )


def _admin_bind(config: GatewayConfig) -> Iterator[Problem]:
    admin = config.admin
    if not admin.enabled:
        return
    if problem := bind_host_problem(admin.bind[0]):
        yield ("admin", "bind"), problem
        return
    for index, listener in enumerate(config.listeners):
        if binds_overlap(listener.bind, admin.bind):
            yield (
                ("admin", "bind"),
                f"{format_host_port(admin.bind)!r} collides with listeners[{index}] "
                f"({listener.name!r}); the admin endpoints need a port of their own",
            )
    if not admin.allow_remote and not is_loopback_host(admin.bind[0]):
        yield (
            ("admin", "bind"),
            f"{format_host_port(admin.bind)!r} is reachable from other machines and the admin "
            "endpoints have no authentication; bind to 127.0.0.1, or set "
            "admin.allow_remote: true to accept that risk explicitly",
        )
