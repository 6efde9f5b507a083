"""What a bind address covers, and when two binds on one port are ambiguous.

A listener's bind host is an IP literal or `localhost` (`bind_host_problem`
says why anything else is refused: a name would be resolved by DNS when the
gateway starts, so neither `validate` nor the Host check could know what it
covers). What a bind covers:
- `0.0.0.0`: every IPv4 address of the machine;
- `[::]`: every address of both families. Like Go's `net.Listen("tcp",
  "[::]:P")` and Node's `listen(P, "::")` (and Linux's default
  `net.ipv6.bindv6only=0`), it is dual-stack: the gateway binds `0.0.0.0` and
  `[::]` together (`listen_host` gives the socket layer no host for it);
- `localhost`: 127.0.0.1 and ::1, the addresses asyncio binds for the name;
- any other address: itself.

Two binds overlap when they share the port and cover a common address: a
connection to that address could belong to either, so `validate` refuses the
pair. A name other than `localhost` (e.g. a redirect target) covers only itself.
"""

from __future__ import annotations

import ipaddress

Address = tuple[str, int]
Coverage = frozenset[tuple[str, str]]
"""(family, address) pairs: family "4", "6" or "name"; address "*" for every address."""

ANY_IPV4 = "0.0.0.0"
ANY_ADDRESS = "::"
LOCALHOST = "localhost"
_LOCALHOST_ADDRESSES: Coverage = frozenset({("4", "127.0.0.1"), ("6", "::1")})


def bind_host_problem(host: str) -> str | None:
    """Why `host` cannot be a listener's bind host (None when it can)."""
    if host == LOCALHOST:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (
            f"{host!r} is not an IP address; bind to an address of this machine "
            "(127.0.0.1, [::1], 0.0.0.0 for every IPv4 address, [::] for every address) or "
            "localhost; list the names clients use under hosts:"
        )
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"{host!r} is an IPv4-mapped address; write {address.ipv4_mapped} instead"
        if address.scope_id:
            return f"{host!r}: addresses with a zone (%{address.scope_id}) are not supported"
    return None


def coverage(host: str) -> Coverage:
    """The addresses a bind host covers (see the module docstring)."""
    if host == ANY_IPV4:
        return frozenset({("4", "*")})
    if host == ANY_ADDRESS:
        return frozenset({("4", "*"), ("6", "*")})
    if host == LOCALHOST:
        return _LOCALHOST_ADDRESSES
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return frozenset({("name", host.lower())})
    return frozenset({(str(address.version), str(address))})


def binds_overlap(a: Address, b: Address) -> bool:
    """True when a connection to some address could belong to both binds."""
    return a[1] == b[1] and any(
        _meet(mine, theirs) for mine in coverage(a[0]) for theirs in coverage(b[0])
    )


def _meet(a: tuple[str, str], b: tuple[str, str]) -> bool:
    if "name" in (a[0], b[0]):  # a name may resolve to any address: it meets every wildcard
        return a == b or "*" in (a[1], b[1])
    return a[0] == b[0] and (a[1] == b[1] or "*" in (a[1], b[1]))


def listen_host(host: str) -> str | None:
    """The host to hand the socket layer for a bind host; None means every address of
    both families (`[::]`, see the module docstring)."""
    return None if host == ANY_ADDRESS else host
