"""A strict reader of the host a client names, and the one spelling of a `hosts:` entry.

`parse_authority` reads a Host header value (or an absolute-form target's
authority) the way a browser writes one: `name[:port]`, `a.b.c.d[:port]` or
`[ipv6][:port]`, any case, one trailing dot allowed on a name. Everything else
is None (the caller answers 400): userinfo, percent-escapes, spaces, an empty
port, a port outside 1-65535, zone ids, a name whose last label is a number but
not a dotted-quad IPv4 address (`127.1`, `0x7f.0.0.1`, `127.000.0.1`: browsers
read those as IPv4 and never send them as they are). One regular expression
without nested repetition, on at most 300 characters: linear.

Shared by the config (`listeners[].hosts`), the `host_check` addon and the
same-origin test of `cors`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

MAX_AUTHORITY = 300
_AUTHORITY_RE = re.compile(
    r"(?:\[(?P<ipv6>[0-9a-f:.]{2,45})\]|(?P<name>[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\.?))"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
"""A dotted-quad IPv4 address in its one canonical spelling (no leading zeros)."""
ANY_HOST = "*"


def ip_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The one spelling of an IP address on every supported Python: an IPv4-mapped IPv6
    address as `::ffff:192.0.2.1` (Python 3.13's `str`; 3.12 writes `::ffff:c000:201`)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


class Authority(NamedTuple):
    """What a client named: host in lower case without a trailing dot (an IPv6 address in
    its canonical form, without brackets), and the port if it gave one."""

    host: str
    port: int | None
    is_ip: bool

    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_authority(value: str) -> Authority | None:
    """The authority in `value`, or None when it is not one a browser would send."""
    if len(value) > MAX_AUTHORITY:
        return None
    match = _AUTHORITY_RE.fullmatch(value.lower())
    if match is None:
        return None
    port_text = match.group("port")
    port = int(port_text) if port_text is not None else None
    if port is not None and not 0 < port < 65536:
        return None
    ipv6 = match.group("ipv6")
    if ipv6 is not None:
        try:
            address = ipaddress.IPv6Address(ipv6)
        except ValueError:
            return None
        return Authority(ip_text(address), port, True)
    name = match.group("name").removesuffix(".")
    if name.rpartition(".")[2].isdigit():
        return Authority(name, port, True) if _IPV4_RE.fullmatch(name) else None
    return Authority(name, port, False)


def host_pattern(entry: str) -> str:
    """A `hosts:` entry in its one spelling (lower case, no trailing dot, IPv6 without
    brackets), or ValueError saying what a valid entry looks like."""
    text = entry.strip().lower()
    if text == ANY_HOST:
        return text
    wildcard = text.startswith("*.")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        parsed = parse_authority(text[2:] if wildcard else text)
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            parsed = None
        else:
            return ip_text(address)
    if parsed is None or parsed.port is not None or (wildcard and parsed.is_ip):
        raise ValueError(
            f"{entry!r} is not a host name without a port (e.g. gateway.example.com, *.example.com "
            "for its subdomains, 192.0.2.10, [2001:db8::1], or * for any)"
        )
    return f"*.{parsed.host}" if wildcard else parsed.host
