"""The `egress:` section: how the gateway reaches engines (and the ACME CA).

```yaml
egress:
  default: bastion                 # optional; the profile of engines without egress:
  bastion: {mode: socks5, url: "socks5://127.0.0.1:11080", fail: closed}
  onion: {mode: tor, socks: "127.0.0.1:9050", control: "127.0.0.1:9051"}
engines:
  - {name: far, url: "http://127.0.0.1:18003", egress: bastion}
```

Every key of `egress:` except `default` names a profile. The profile `direct`
always exists. socks5 and tor profiles resolve host names on the proxy, never
locally, and fail closed unless they say `fail: open`. Cross-field rules
(unknown profile names, .onion engines without Tor) are in `check_egress`,
called from `config.semantic`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.config.types import Duration, HostPort, StrictModel

DIRECT = "direct"
"""The built-in profile: connect straight to the engine."""

DEFAULT_CONNECT_TIMEOUT = 10.0
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

Problem = tuple[tuple[str | int, ...], str]


def _number_as_text(value: Any) -> Any:
    """`password: 123456` in YAML is a number: take it as the text written (so that a
    validation error never has to echo a credential)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


_NUMBER_AS_TEXT = BeforeValidator(_number_as_text)
"""For credentials (usernames, passwords): a YAML number is the text it was written as."""


class FailMode(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class EgressMode(StrEnum):
    DIRECT = "direct"
    SOCKS5 = "socks5"
    TOR = "tor"


class DirectEgress(StrictModel):
    """Connect to the engine from this host, resolving its name locally."""

    mode: Literal["direct"] = Field(description="direct: no proxy.")


class _ProxiedEgress(StrictModel):
    """Settings every proxied profile shares."""

    fail: FailMode = Field(
        FailMode.CLOSED,
        description=(
            "closed: when the proxy fails, the request fails (never sent directly). "
            "open: fall back to a direct connection and log a warning and an audit record."
        ),
    )
    connect_timeout: Duration = Field(
        DEFAULT_CONNECT_TIMEOUT,
        description=(
            "Time to open a connection through the proxy (proxy handshake and the proxy's "
            "connect to the engine). Replaces the engine's timeouts.connect for engines "
            "using this profile. Tor's own SOCKS timeout (120 s) is never waited for."
        ),
    )

    @field_validator("connect_timeout")
    @classmethod
    def _check_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("connect_timeout must be greater than 0")
        return value


class Socks5Egress(_ProxiedEgress):
    """Connect through a SOCKS5 proxy (e.g. a bastion), which also resolves host names."""

    mode: Literal["socks5"] = Field(description="socks5: through a SOCKS5 proxy.")
    url: str = Field(
        description=(
            "The proxy, socks5://host:port (socks5h:// is accepted and means the same: names "
            "are always resolved by the proxy). Credentials go in username/password."
        )
    )
    username: Annotated[str | None, _NUMBER_AS_TEXT] = Field(
        None, description="SOCKS5 username (RFC 1929); set together with password."
    )
    password: Annotated[SecretStr | None, _NUMBER_AS_TEXT] = Field(
        None,
        description="SOCKS5 password; use ${VAR} to take it from the environment. Never logged.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("socks5", "socks5h"):
            raise ValueError("the proxy URL must start with socks5:// (or socks5h://)")
        if "@" in parts.netloc:
            # The URL is not echoed: it may hold a password.
            raise ValueError(
                "credentials in the URL are not accepted; use username: and password: "
                "(e.g. password: ${SOCKS_PASSWORD})"
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port") from None
        if not parts.hostname or port is None:
            raise ValueError(f"{value!r} is not socks5://host:port")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a proxy URL has no path, query or fragment")
        return value

    @model_validator(mode="after")
    def _check_credentials(self) -> Socks5Egress:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together; set both or neither")
        for label, text in (
            ("username", self.username),
            ("password", self.password.get_secret_value() if self.password else None),
        ):
            if text is not None and not 0 < len(text.encode()) <= 255:
                raise ValueError(f"the SOCKS5 {label} must be 1 to 255 bytes long")
        return self

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the proxy."""
        parts = urlsplit(self.url)
        return parts.hostname or "", parts.port or 1080


class TorEgress(_ProxiedEgress):
    """Connect through a Tor client's SocksPort; Tor resolves names and reaches .onion hosts."""

    mode: Literal["tor"] = Field(description="tor: through a Tor SocksPort.")
    socks: HostPort = Field(
        ("127.0.0.1", 9050), description="The Tor SocksPort, host:port (default 127.0.0.1:9050)."
    )
    control: HostPort | None = Field(
        None,
        description=(
            "Tor's ControlPort, host:port. When set, the gateway asks Tor whether it has "
            "bootstrapped and answers 503 at once while it has not."
        ),
    )
    control_password: Annotated[SecretStr | None, _NUMBER_AS_TEXT] = Field(
        None, description="Password for the ControlPort (HashedControlPassword). Never logged."
    )
    control_cookie: str | None = Field(
        None,
        description="Path of Tor's control auth cookie file (CookieAuthentication 1).",
    )

    @model_validator(mode="after")
    def _check_control(self) -> TorEgress:
        if self.control is None and (self.control_password or self.control_cookie):
            raise ValueError("control_password and control_cookie need control: host:port")
        if self.control_password is not None and self.control_cookie is not None:
            raise ValueError("set control_password or control_cookie, not both")
        return self


EgressProfile = Annotated[DirectEgress | Socks5Egress | TorEgress, Field(discriminator="mode")]
"""One named way out: direct, socks5 or tor."""

ProxiedEgress = Socks5Egress | TorEgress


class EgressSettings(StrictModel):
    """Named egress profiles, and which one applies to engines that name none."""

    # Every key other than `default` is a profile name, typed by __pydantic_extra__.
    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, EgressProfile] = Field(init=False)

    default: str = Field(
        DIRECT,
        description=(
            "Name of the profile used by engines without egress: and by the ACME client. "
            "direct unless set."
        ),
    )

    @field_validator("default", mode="before")
    @classmethod
    def _check_default(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            raise ValueError(
                "'default' names the default profile (e.g. default: bastion); "
                "define the profile under its own name"
            )
        return value

    @model_validator(mode="after")
    def _check_names(self) -> EgressSettings:
        for name, profile in self.profiles.items():
            if not _NAME_RE.match(name):
                raise ValueError(
                    f"{name!r} is not a valid profile name (letters, digits, '_', '.', '-')"
                )
            if name == DIRECT and not isinstance(profile, DirectEgress):
                raise ValueError(f"{DIRECT!r} is the built-in direct profile; choose another name")
        return self

    @property
    def profiles(self) -> dict[str, DirectEgress | Socks5Egress | TorEgress]:
        """Every profile by name, the built-in `direct` included."""
        named = dict(self.__pydantic_extra__ or {})
        named.setdefault(DIRECT, DirectEgress(mode="direct"))
        return named

    def resolve(self, name: str | None) -> tuple[str, DirectEgress | Socks5Egress | TorEgress]:
        """(name, profile) for an engine's `egress:` value (None: the default)."""
        chosen = self.default if name is None else name
        return chosen, self.profiles[chosen]


def engine_connect_timeout(settings: EgressSettings, engine: EngineConfig) -> float:
    """The connect timeout of `engine`: its proxied profile's connect_timeout, else its own."""
    name = engine.egress if engine.egress is not None else settings.default
    profile = settings.profiles.get(name)
    if isinstance(profile, Socks5Egress | TorEgress):
        return profile.connect_timeout
    return engine.timeouts.connect


def _is_onion(host: str) -> bool:
    return host.lower().rstrip(".").endswith(".onion")


def check_egress(settings: EgressSettings, engines: Sequence[EngineConfig]) -> Iterator[Problem]:
    """Cross-field egress rules: every name refers to a profile, .onion needs Tor or SOCKS,
    and no engine address is reached both directly and only through a fail-closed proxy."""
    profiles = settings.profiles
    choices = ", ".join(sorted(profiles))
    if settings.default not in profiles:
        yield (
            ("egress", "default"),
            f"unknown egress profile {settings.default!r}; defined profiles: {choices}",
        )
    fail_closed: dict[tuple[str, int], int] = {}
    direct: dict[tuple[str, int], int] = {}
    for index, engine in enumerate(engines):
        name = engine.egress if engine.egress is not None else settings.default
        if name not in profiles:
            if engine.egress is not None:
                yield (
                    ("engines", index, "egress"),
                    f"unknown egress profile {name!r}; defined profiles: {choices}",
                )
            continue
        profile = profiles[name]
        address = _address(engine.url)
        if isinstance(profile, DirectEgress) or profile.fail is FailMode.OPEN:
            direct.setdefault(address, index)
        else:
            fail_closed.setdefault(address, index)
        host = address[0]
        if _is_onion(host) and isinstance(profiles[name], DirectEgress):
            yield (
                ("engines", index, "url"),
                f"{host!r} is a Tor onion address; set egress: to a tor (or socks5) profile "
                f"(the engine uses {name!r}, which is direct)",
            )
    for address, index in direct.items():
        if address in fail_closed:
            other = engines[fail_closed[address]]
            yield (
                ("engines", index, "url"),
                f"engine {other.name!r} reaches the same host:port only through a fail-closed "
                "egress, so a direct connection to it is always refused; use the same egress",
            )


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    return (parts.hostname or "").rstrip("."), parts.port or default_port
