"""`EgressService`: the one object the gateway asks how to reach an engine.

It holds the current `EgressPlan` (made by `prepare`, replaced whole by `commit`) and the
CONNECT bridge that mitmproxy's upstream connections go `via`. The egress
addon owns one and starts/stops it. Everything else that opens a connection
to an engine gets its means from here, so every path egresses the same way:

- the engine directory: `dialer_factory(config)` (connect probes) and
  `session_factory(config)` (health checks, model lists, fallback requests);
- anything else: `dialer(engine)`, `connect_timeout(engine)`, `new_session(engine)`;
- the ACME client: `acme_proxy_url()` (the default profile, through the bridge).

Lookups happen per connection, so objects made before a reload follow the new
config after it.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

from flm_gateway.config.egress_settings import DIRECT, DirectEgress
from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.config.loader import LoadedConfig
from flm_gateway.egress.bridge import ConnectBridge
from flm_gateway.egress.dialer import Dialer, Streams
from flm_gateway.egress.profiles import EgressPlan, RuntimeProfile, build_plan, make_profile
from flm_gateway.egress.sessions import make_session
from flm_gateway.httpio.http_client import HttpSession

_BRIDGE_USER = "flm"
DEFAULT_CONNECT_TIMEOUT = 5.0

Dial = Callable[[str, int], Awaitable[Streams]]


def _initial_plan() -> EgressPlan:
    direct = make_profile(DIRECT, DirectEgress(mode="direct"))
    return EgressPlan(profiles=MappingProxyType({DIRECT: direct}))


class EgressService:
    """Egress profiles and the CONNECT bridge of one gateway process."""

    def __init__(self) -> None:
        self._token = secrets.token_urlsafe(24)
        credentials = base64.b64encode(f"{_BRIDGE_USER}:{self._token}".encode()).decode()
        self.proxy_authorization = f"Basic {credentials}"
        """The Proxy-Authorization the bridge requires; a secret of this process."""
        self.bridge = ConnectBridge(self.proxy_authorization)
        self._plan = _initial_plan()
        self.bridge.update(self._plan.profiles, self._plan.default)

    def __repr__(self) -> str:
        return f"EgressService(profiles={sorted(self._plan.profiles)})"

    @property
    def plan(self) -> EgressPlan:
        return self._plan

    def prepare(self, loaded: LoadedConfig) -> EgressPlan:
        """The plan of a validated config (unchanged profiles keep their dialers); pure."""
        config = loaded.config
        return build_plan(config.egress, config.engines, previous=self._plan)

    def commit(self, plan: EgressPlan) -> None:
        """Switch to `plan`: bridge listeners bound for its proxied profiles (never raises)."""
        self.bridge.update(plan.profiles, plan.default)
        self._plan = plan

    async def start(self) -> None:
        await self.bridge.start()

    async def stop(self) -> None:
        await self.bridge.stop()

    # --- lookups ---

    def profile(self, engine: str | None) -> RuntimeProfile:
        """The profile of an engine (the default profile for None or an unknown engine)."""
        return self._plan.profile_for(engine)

    def dialer(self, engine: str | None) -> Dialer:
        """The dialer for sockets to `engine`."""
        return self.profile(engine).dialer

    def connect_timeout(
        self, engine: str | None, default: float = DEFAULT_CONNECT_TIMEOUT
    ) -> float:
        """Connect timeout for `engine`: its proxied profile's, else its own timeouts.connect."""
        entry = self._plan.engines.get(engine) if engine is not None else None
        if entry is not None:
            return entry.connect_timeout
        profile_timeout = self.profile(engine).connect_timeout
        return profile_timeout if profile_timeout is not None else default

    def bridge_address(self, profile: str) -> tuple[str, int] | None:
        """Where mitmproxy sends CONNECT for a proxied profile; None when it cannot."""
        if not self.bridge.started:
            return None
        return self.bridge.address(profile)

    # --- factories for the engine directory and other clients ---

    def dialer_factory(self, config: EngineConfig) -> Dial:
        """`Dial` for the engine directory: open a connection to the engine through its egress.

        Bounded by the engine's connect timeout; raises `EgressError` (an OSError) on failure.
        """
        name, fallback = config.name, config.timeouts.connect

        async def dial(host: str, port: int) -> Streams:
            timeout = self.connect_timeout(name, fallback)
            return await self.dialer(name).open_connection(host, port, timeout)

        return dial

    def session_factory(self, config: EngineConfig) -> HttpSession:
        """A new HTTP session for the engine's HTTP calls, owned (closed) by the caller."""
        return self.new_session(config.name, default_timeout=config.timeouts.connect)

    def new_session(
        self, engine: str | None, *, default_timeout: float = DEFAULT_CONNECT_TIMEOUT, **kwargs: Any
    ) -> HttpSession:
        """A new session egressing like `engine` (None: the default profile); caller closes it."""

        def lookup() -> tuple[Dialer, float]:
            return self.dialer(engine), self.connect_timeout(engine, default_timeout)

        return make_session(lookup, **kwargs)

    def acme_proxy_url(self) -> str:
        """The proxy URL for the ACME client (requests-style): the bridge's default listener.

        `http://flm:TOKEN@127.0.0.1:PORT`, stable for the life of this service: CONNECTs to it
        go out through whatever `egress.default` is now (direct included), with its fail
        open/closed, so requests needs no SOCKS support. Accepts once the gateway runs.
        The URL carries this process's bridge token: never log it.
        """
        host, port = self.bridge.ensure_default()
        return f"http://{_BRIDGE_USER}:{self._token}@{host}:{port}"

    def socks_proxy_url(self, profile: str | None = None) -> str | None:
        """A socks5h:// URL (remote DNS) for `profile` (default: egress.default), for clients
        outside a running gateway (needs `requests[socks]`); None when it is direct.
        The URL may carry the profile's password: never log it."""
        chosen = self._plan.profiles.get(profile) if profile else self.profile(None)
        return chosen.socks_proxy_url() if chosen is not None else None
