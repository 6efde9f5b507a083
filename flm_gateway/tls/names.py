"""Which names a listener's certificate covers when the config does not list them all.

dev-selfsigned and packaged-ca certificates cover the configured hostnames,
`localhost` and the listener's IP addresses: the bind address, or for a
wildcard bind (0.0.0.0, ::) the loopback addresses and every address of the
machine's interfaces.
"""

from __future__ import annotations

import ipaddress

import psutil

from flm_gateway.config.listener_settings import ListenerConfig

_WILDCARDS = ("0.0.0.0", "::")


def interface_addresses() -> list[str]:
    """Every IPv4/IPv6 address of this machine's interfaces (no link-local scopes)."""
    found: list[str] = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            text = str(address.address).split("%", 1)[0]
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if not ip.is_link_local:
                found.append(str(ip))
    return found


def listener_ips(listener: ListenerConfig) -> list[str]:
    host = listener.bind[0]
    if host in _WILDCARDS:
        return list(dict.fromkeys(["127.0.0.1", "::1", *sorted(interface_addresses())]))
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return []


def default_names(listener: ListenerConfig) -> list[str]:
    """hostnames, then localhost, then the listener's IPs (and a named bind host)."""
    names = [*listener.tls.hostnames, "localhost"]
    host = listener.bind[0]
    if host not in _WILDCARDS and not _is_ip(host):
        names.append(host.lower())
    names += listener_ips(listener)
    return list(dict.fromkeys(names))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
