"""From the `egress:` and `engines:` config to frozen runtime state.

`RuntimeProfile` is one profile with its dialer; `EgressPlan` says, for every
engine, which profile it uses and with which connect timeout, and which
engine addresses must never be dialled directly (engines of fail-closed
proxied profiles). Built once per config by `build_plan`; never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import quote, urlsplit

from flm_gateway.config.egress_settings import (
    DirectEgress,
    EgressSettings,
    FailMode,
    Socks5Egress,
    TorEgress,
    engine_connect_timeout,
)
from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.egress.dialer import Dialer, DirectDialer, FallbackDialer, SocksDialer
from flm_gateway.egress.tor import TorControl

Profile = DirectEgress | Socks5Egress | TorEgress


@dataclass(frozen=True)
class RuntimeProfile:
    """One egress profile ready to dial."""

    name: str
    config: Profile
    dialer: Dialer

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def proxied(self) -> bool:
        return not isinstance(self.config, DirectEgress)

    @property
    def fail_open(self) -> bool:
        return isinstance(self.config, Socks5Egress | TorEgress) and (
            self.config.fail is FailMode.OPEN
        )

    @property
    def connect_timeout(self) -> float | None:
        """The profile's connect timeout; None for direct (the engine's own applies)."""
        if isinstance(self.config, Socks5Egress | TorEgress):
            return self.config.connect_timeout
        return None

    def socks_proxy_url(self) -> str | None:
        """A requests-style socks5h:// URL (remote DNS), credentials included; None if direct.

        The URL is a secret when the profile has a password: never log it.
        """
        if isinstance(self.config, Socks5Egress):
            host, port = self.config.address
            auth = ""
            if self.config.username is not None and self.config.password is not None:
                user = quote(self.config.username, safe="")
                password = quote(self.config.password.get_secret_value(), safe="")
                auth = f"{user}:{password}@"
            return f"socks5h://{auth}{_url_host(host)}:{port}"
        if isinstance(self.config, TorEgress):
            host, port = self.config.socks
            return f"socks5h://{_url_host(host)}:{port}"
        return None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def make_profile(name: str, config: Profile) -> RuntimeProfile:
    """A profile with its dialer: direct, SOCKS, or SOCKS falling back to direct (fail: open)."""
    if isinstance(config, DirectEgress):
        return RuntimeProfile(name, config, DirectDialer(name))
    socks: SocksDialer
    if isinstance(config, Socks5Egress):
        credentials = None
        if config.username is not None and config.password is not None:
            credentials = (config.username, config.password.get_secret_value())
        socks = SocksDialer(name, config.mode, config.address, credentials=credentials)
    else:
        control = None
        if config.control is not None:
            password = config.control_password
            control = TorControl(
                config.control,
                password=password.get_secret_value() if password else None,
                cookie_file=config.control_cookie,
            )
        socks = SocksDialer(name, config.mode, config.socks, tor_control=control)
    dialer: Dialer = FallbackDialer(socks) if config.fail is FailMode.OPEN else socks
    return RuntimeProfile(name, config, dialer)


@dataclass(frozen=True)
class EngineEgress:
    """How one engine is reached."""

    engine: str
    profile: RuntimeProfile
    address: tuple[str, int]
    connect_timeout: float


def engine_address(url: str) -> tuple[str, int]:
    """(host, port) of an engine URL, host lowercased, the scheme's port by default."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    return host, parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class EgressPlan:
    """Which profile every engine uses; frozen, replaced whole on reload."""

    profiles: Mapping[str, RuntimeProfile] = field(default_factory=dict)
    default: str = "direct"
    engines: Mapping[str, EngineEgress] = field(default_factory=dict)
    fail_closed_targets: Mapping[tuple[str, int], str] = field(default_factory=dict)
    """Engine (host, port) -> name of its fail-closed proxied profile."""

    def profile_for(self, engine: str | None) -> RuntimeProfile:
        """The profile of a named engine; the default profile for unknown engines."""
        if engine is not None and engine in self.engines:
            return self.engines[engine].profile
        return self.profiles[self.default]


def build_plan(
    settings: EgressSettings,
    engines: list[EngineConfig],
    previous: EgressPlan | None = None,
) -> EgressPlan:
    """The plan for a validated config; unchanged profiles keep their dialer (and its cache)."""
    profiles: dict[str, RuntimeProfile] = {}
    for name, config in settings.profiles.items():
        old = previous.profiles.get(name) if previous else None
        profiles[name] = (
            old if old is not None and old.config == config else make_profile(name, config)
        )
    by_engine: dict[str, EngineEgress] = {}
    fail_closed: dict[tuple[str, int], str] = {}
    for engine in engines:
        profile = profiles[engine.egress if engine.egress is not None else settings.default]
        address = engine_address(engine.url)
        by_engine[engine.name] = EngineEgress(
            engine.name, profile, address, engine_connect_timeout(settings, engine)
        )
        if profile.proxied and not profile.fail_open:
            fail_closed.setdefault(address, profile.name)
    return EgressPlan(
        profiles=MappingProxyType(profiles),
        default=settings.default,
        engines=MappingProxyType(by_engine),
        fail_closed_targets=MappingProxyType(fail_closed),
    )
