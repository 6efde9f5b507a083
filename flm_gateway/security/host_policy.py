"""Which Host values a socket answers to (the `host_check` addon, the admin listener).

A socket accepts `localhost`; the addresses of its bind (each address
`localhost` binds for a `localhost` bind; every IP literal for a wildcard bind,
`0.0.0.0` or `[::]`, which cannot know the addresses clients reach it on: IP
literals cannot be rebound); and the names it is given (`hosts:` entries, TLS
names): exact, `*.domain` for any subdomain (never the domain itself), `*` for
anything. `accepts` is a set lookup plus a suffix test per `*.domain`; `usual`
maps the raw Host values clients usually send to what `parse_authority` would
read, so the common request costs one dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flm_gateway.config.binds import ANY_ADDRESS, ANY_IPV4, LOCALHOST, coverage
from flm_gateway.core.hostnames import ANY_HOST, Authority, parse_authority


@dataclass(frozen=True)
class HostPolicy:
    """The Host values one listener answers to."""

    exact: frozenset[str]
    """Names and IP addresses (canonical, IPv6 without brackets)."""
    suffixes: tuple[str, ...]
    """".example.com" for each *.example.com: any subdomain, never the domain itself."""
    any_ip: bool
    """A wildcard bind: every IP literal is accepted."""
    any_host: bool
    """`hosts: ["*"]`: every well-formed Host is accepted."""
    usual: Mapping[bytes, Authority]
    """Accepted Host values as clients usually write them (each exact name, without a port
    and with the listener's): the common case is one dict lookup instead of a parse."""

    @classmethod
    def for_bind(cls, bind: tuple[str, int], names: Iterable[str]) -> HostPolicy:
        """What a socket bound at `bind` answers to, besides `names` (`hosts:` entries
        and TLS names, in their one spelling; `*` for anything)."""
        bind_host, port = bind
        names = list(names)
        addresses = {address for family, address in coverage(bind_host) if address != "*"}
        exact = {LOCALHOST, *addresses}
        exact |= {_canonical(n) for n in names if n != ANY_HOST and not n.startswith("*.")}
        usual: dict[bytes, Authority] = {}
        for name in exact:
            is_ip = ":" in name or name.rpartition(".")[2].isdigit()
            written = f"[{name}]" if ":" in name else name
            usual[written.encode()] = Authority(name, None, is_ip)
            usual[f"{written}:{port}".encode()] = Authority(name, port, is_ip)
        return cls(
            exact=frozenset(exact),
            suffixes=tuple(sorted({n[1:] for n in names if n.startswith("*.")})),
            any_ip=bind_host in (ANY_IPV4, ANY_ADDRESS),
            any_host=ANY_HOST in names,
            usual=usual,
        )

    def accepts(self, authority: Authority) -> bool:
        return self.any_host or self.names(authority)

    def names(self, authority: Authority) -> bool:
        """`authority` is one of the socket's names (`*` aside: it vouches for nothing)."""
        host = authority.host
        if host in self.exact:
            return True
        if authority.is_ip:
            return self.any_ip
        return any(host.endswith(suffix) for suffix in self.suffixes)


def _canonical(name: str) -> str:
    parsed = parse_authority(name)
    return parsed.host if parsed is not None else name
