"""Find the real client address behind trusted reverse proxies.

Policy (on `requestheaders`, right after `listener_context`): `flm.client_ip`
starts as the TCP peer (IPv4-mapped IPv6 unwrapped). Only when the peer is in
the listener's `security.ip.trusted_proxies` is `X-Forwarded-For` read, from
right to left, skipping trusted proxies; the first untrusted address is the
client. An unparsable entry stops the walk (the last good hop stands), so a
client cannot inject an address through a proxy that appends to the header.
From any other peer the header is ignored. Writes `flm.client_ip` and
`flm.peer_ip`. Never rejects.
"""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

from flm_gateway.core.netset import IPAddress, NetworkMap, parse_ip
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import CLIENT_IP, PEER_IP
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.policies import listener_name, per_listener


def forwarded_client(
    peer: IPAddress, forwarded_for: list[str], trusted: NetworkMap[bool]
) -> IPAddress:
    """The client address given the peer, the X-Forwarded-For values and the trusted proxies."""
    if peer not in trusted:
        return peer
    client = peer
    entries = [entry.strip() for value in forwarded_for for entry in value.split(",")]
    for entry in reversed(entries):
        address = parse_ip(_strip_port(entry))
        if address is None:
            break
        client = address
        if address not in trusted:
            break
    return client


def _strip_port(entry: str) -> str:
    if entry.startswith("["):
        return entry[1:].split("]", 1)[0]
    if entry.count(":") == 1:
        return entry.split(":", 1)[0]
    return entry


class ClientIp:
    def __init__(self) -> None:
        self._trusted: Mapping[str, NetworkMap[bool]] = {}

    def prepare(self, runtime: Runtime) -> Mapping[str, NetworkMap[bool]]:
        return {
            name: NetworkMap((cidr, True) for cidr in security.ip.trusted_proxies)
            for name, security in per_listener(runtime.loaded.config).items()
        }

    def commit(self, prepared: Mapping[str, NetworkMap[bool]]) -> None:
        self._trusted = prepared

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        peer_text = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        peer = parse_ip(peer_text)
        if peer is None:
            CLIENT_IP.set(flow, peer_text)
            PEER_IP.set(flow, peer_text)
            return
        PEER_IP.set(flow, str(peer))
        trusted = self._trusted.get(listener_name(flow) or "")
        client = peer
        if trusted:
            client = forwarded_client(
                peer, flow.request.headers.get_all("x-forwarded-for"), trusted
            )
        CLIENT_IP.set(flow, str(client))
