"""`EgressService`: the one object the gateway asks how to reach an engine.

It holds the current `EgressPlan` (replaced whole by `apply_config`), the
CONNECT bridge that mitmproxy's upstream connections go `via`, and one
aiohttp session per profile. The egress addon owns one and starts/stops it;
the engine directory gets the same instance and uses `dialer(engine)`,
`connect_timeout(engine)` and `session(engine)` for every socket it opens
to an engine; the ACME client uses `acme_proxy_url()`.
"""

from __future__ import annotations

import base64
import secrets
from types import MappingProxyType

import aiohttp

from flm_gateway.config.egress import DIRECT, DirectEgress
from flm_gateway.config.loader import LoadedConfig
from flm_gateway.egress.bridge import ConnectBridge
from flm_gateway.egress.dialer import Dialer
from flm_gateway.egress.profiles import EgressPlan, RuntimeProfile, build_plan, make_profile
from flm_gateway.egress.sessions import SessionPool

_BRIDGE_USER = "flm"


def _initial_plan() -> EgressPlan:
    direct = make_profile(DIRECT, DirectEgress(mode="direct"))
    return EgressPlan(profiles=MappingProxyType({DIRECT: direct}))


class EgressService:
    """Egress profiles, the CONNECT bridge and per-profile HTTP sessions of one gateway."""

    def __init__(self) -> None:
        self._token = secrets.token_urlsafe(24)
        credentials = base64.b64encode(f"{_BRIDGE_USER}:{self._token}".encode()).decode()
        self.proxy_authorization = f"Basic {credentials}"
        """The Proxy-Authorization the bridge requires; a secret of this process."""
        self.bridge = ConnectBridge(self.proxy_authorization)
        self._plan = _initial_plan()
        self._sessions = SessionPool()

    def __repr__(self) -> str:
        return f"EgressService(profiles={sorted(self._plan.profiles)})"

    @property
    def plan(self) -> EgressPlan:
        return self._plan

    def apply_config(self, loaded: LoadedConfig) -> None:
        """Switch to a validated config: new plan, bridge listeners bound for new profiles."""
        config = loaded.config
        plan = build_plan(config.egress, config.engines, previous=self._plan)
        self.bridge.update(plan.profiles)
        self._plan = plan
        self._sessions.keep_only(dict(plan.profiles))

    async def start(self) -> None:
        await self.bridge.start()

    async def stop(self) -> None:
        await self.bridge.stop()
        await self._sessions.close()

    def profile(self, engine: str | None) -> RuntimeProfile:
        """The profile of an engine (the default profile for None or an unknown engine)."""
        return self._plan.profile_for(engine)

    def dialer(self, engine: str | None) -> Dialer:
        """The dialer for sockets to `engine` (connect probes, anything not HTTP)."""
        return self.profile(engine).dialer

    def connect_timeout(self, engine: str, fallback: float = 10.0) -> float:
        """The connect timeout for `engine`: its proxied profile's, else its own."""
        entry = self._plan.engines.get(engine)
        if entry is not None:
            return entry.connect_timeout
        return self.profile(engine).connect_timeout or fallback

    def session(self, engine: str | None = None) -> aiohttp.ClientSession:
        """The aiohttp session for HTTP calls to `engine` (or the default profile for None).

        Shared by all engines of the profile; do not close it. Call inside the event loop.
        """
        return self._sessions.get(self.profile(engine))

    def bridge_address(self, profile: str) -> tuple[str, int] | None:
        """Where mitmproxy sends CONNECT for a proxied profile; None when it cannot."""
        if not self.bridge.started:
            return None
        return self.bridge.address(profile)

    def acme_proxy_url(self) -> str | None:
        """The proxy URL for the ACME client (requests-style), for the default profile.

        While the gateway runs: the bridge (`http://flm:TOKEN@127.0.0.1:PORT`), which needs
        no SOCKS support in requests and applies fail open/closed. Otherwise a socks5h://
        URL (needs `requests[socks]`). None for a direct default. The URL is a secret.
        """
        profile = self.profile(None)
        if not profile.proxied:
            return None
        address = self.bridge_address(profile.name)
        if address is not None:
            return f"http://{_BRIDGE_USER}:{self._token}@{address[0]}:{address[1]}"
        return profile.socks_proxy_url()
