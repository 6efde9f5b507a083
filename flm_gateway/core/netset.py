"""Sets of IPv4/IPv6 networks with O(prefix lengths) lookups, for allow and block lists.

Addresses are normalised first: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`,
what a dual-stack socket reports) is the IPv4 address, so it cannot slip past an
IPv4 rule.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress | None:
    """The address in `text` (IPv4-mapped IPv6 unwrapped; a zone id dropped), or None.

    Cached: every request's client address is parsed by several policies (~3 µs each
    with `ipaddress`); the addresses are immutable, and a client churning addresses
    only evicts entries (the cache is bounded)."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise_ip(text: str) -> str:
    """`text` as a canonical address string, or unchanged when it is not an address."""
    address = parse_ip(text)
    return str(address) if address is not None else text


def host_cidr(address: IPAddress) -> str:
    """The one-address network of `address` (`/32` or `/128`)."""
    return f"{address}/{address.max_prefixlen}"


def client_network(address: IPAddress, ipv6_prefix: int) -> str:
    """The network one client is taken to hold: the IPv4 address, or its IPv6 `/ipv6_prefix`."""
    if address.version == 4 or ipv6_prefix >= 128:
        return host_cidr(address)
    return str(ipaddress.ip_network(f"{address}/{ipv6_prefix}", strict=False))


def client_subject(text: str, ipv6_prefix: int) -> str:
    """The per-client key for limits and counters: `192.0.2.1` or `2001:db8:1:2::/64`."""
    address = parse_ip(text)
    if address is None:
        return text
    if address.version == 4 or ipv6_prefix >= 128:
        return str(address)
    return client_network(address, ipv6_prefix)


def parse_network(cidr: str) -> IPNetwork:
    """The network `cidr` (an IPv4-mapped IPv6 network as its IPv4 network)."""
    network = ipaddress.ip_network(cidr.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}", strict=False)
    return network


class NetworkMap[V]:
    """Networks mapped to values; `lookup(ip)` finds the most specific network holding it."""

    def __init__(self, items: Iterable[tuple[str, V]] = ()) -> None:
        self._by_prefix: dict[tuple[int, int], dict[int, tuple[str, V]]] = {}
        for cidr, value in items:
            self.add(cidr, value)

    _parse = staticmethod(parse_network)

    def add(self, cidr: str, value: V) -> None:
        network = self._parse(cidr)
        bucket = self._by_prefix.setdefault((network.version, network.prefixlen), {})
        bucket[int(network.network_address)] = (str(network), value)

    def remove(self, cidr: str) -> bool:
        network = self._parse(cidr)
        bucket = self._by_prefix.get((network.version, network.prefixlen))
        if bucket is None or bucket.pop(int(network.network_address), None) is None:
            return False
        if not bucket:
            del self._by_prefix[(network.version, network.prefixlen)]
        return True

    def lookup(self, address: IPAddress) -> tuple[str, V] | None:
        """(cidr, value) of the longest-prefix network containing `address`, or None."""
        number = int(address)
        bits = address.max_prefixlen
        best: tuple[int, tuple[str, V]] | None = None
        for (version, prefixlen), bucket in self._by_prefix.items():
            if version != address.version:
                continue
            key = (number >> (bits - prefixlen)) << (bits - prefixlen) if prefixlen else 0
            hit = bucket.get(key)
            if hit is not None and (best is None or prefixlen > best[0]):
                best = (prefixlen, hit)
        return best[1] if best is not None else None

    def lookup_all(self, address: IPAddress) -> Iterator[tuple[str, V]]:
        """Every (cidr, value) whose network contains `address`."""
        number = int(address)
        bits = address.max_prefixlen
        for (version, prefixlen), bucket in self._by_prefix.items():
            if version != address.version:
                continue
            key = (number >> (bits - prefixlen)) << (bits - prefixlen) if prefixlen else 0
            hit = bucket.get(key)
            if hit is not None:
                yield hit

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return self.lookup(address) is not None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._by_prefix.values())

    def items(self) -> Iterator[tuple[str, V]]:
        for bucket in self._by_prefix.values():
            yield from bucket.values()
