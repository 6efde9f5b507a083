"""Block clients automatically after repeated offences; blocks grow on repeat and expire.

Policy (on `response` and `error`, after every other addon recorded its events):
each event with an offence (`auth` failures, `intrusion` hits with action
block, `honeypot` hits, `anomaly` findings) is counted per client address in a
sliding window of `auto_block.window`. When a count reaches its threshold
(`auth_failures`, `intrusion_hits`, `honeypot_hits`, `anomalies`; 0 disables
that one), the client is blocked through the state service (its `/32`; for IPv6
its `/security.ipv6_prefix`, a /64 by default, the block a subscriber holds):
in memory at once, so the very next request is refused by `ip_filter`, and in
the store, so the block survives restarts and reaches replicas. The first block
lasts `duration`; each repeat (an earlier block of the same address active or
expired less than `remember` ago) lasts `growth` times longer, up to
`max_duration`. Records `ip.blocked` (severity high) with the reason, strike
count and duration. `auto_block.enabled: false` keeps counting off: offences
are only audited.

Never blocked: a block whose network would hold an address of `never_block`
(loopback by default, as fail2ban's `ignoreip`; IPv4-mapped loopback is
loopback, see `security.netset`). Such a client's offences are still counted
and its events audited; reaching a threshold records `ip.not_blocked` (severity
medium, with the reason and network) instead of a block, so a misplaced reverse
proxy that makes every client 127.0.0.1 shows up in the audit log. The address
is the client after `client_ip`: behind a trusted proxy on loopback, its clients
are blocked, not the proxy.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import http

from flm_gateway.config.security_settings import AutoBlockSettings
from flm_gateway.core.netset import IPNetwork, client_network, parse_ip, parse_network
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import AUTO_BLOCK_COUNTED
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.events import Offence, events_of, record
from flm_gateway.security.policies import client_ip
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import BlockRecord

MAX_TRACKED = 50_000


@dataclass(frozen=True)
class Spared:
    """A threshold reached by a client whose block `never_block` forbids: no block."""

    cidr: str


def threshold(settings: AutoBlockSettings, offence: Offence) -> int:
    return {
        Offence.AUTH: settings.auth_failures,
        Offence.INTRUSION: settings.intrusion_hits,
        Offence.HONEYPOT: settings.honeypot_hits,
        Offence.ANOMALY: settings.anomalies,
    }[offence]


def block_duration(settings: AutoBlockSettings, strikes: int) -> float:
    """How long the `strikes`-th block lasts."""
    return float(min(settings.max_duration, settings.duration * settings.growth ** (strikes - 1)))


class AutoBlock:
    def __init__(self, state: StateService, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._clock = clock
        self._settings = AutoBlockSettings()
        self._ipv6_prefix = 64
        self._never_block: tuple[IPNetwork, ...] = ()
        self._offences: OrderedDict[tuple[str, Offence], deque[float]] = OrderedDict()

    def prepare(self, runtime: Runtime) -> tuple[AutoBlockSettings, int, tuple[IPNetwork, ...]]:
        security = runtime.loaded.config.security
        settings = security.auto_block
        never_block = tuple(parse_network(cidr) for cidr in settings.never_block)
        return settings, security.ipv6_prefix, never_block

    def commit(self, prepared: tuple[AutoBlockSettings, int, tuple[IPNetwork, ...]]) -> None:
        self._settings, self._ipv6_prefix, self._never_block = prepared

    def spared(self, cidr: str) -> bool:
        """Whether blocking `cidr` would block an address of `never_block`."""
        network = ipaddress.ip_network(cidr)
        return any(
            network.version == kept.version and network.overlaps(kept) for kept in self._never_block
        )

    def offend(self, ip: str, offence: Offence) -> BlockRecord | Spared | None:
        """Count one offence of `ip`; the block it causes, `Spared`, or None."""
        settings = self._settings
        limit = threshold(settings, offence)
        address = parse_ip(ip)
        if not settings.enabled or limit <= 0 or address is None:
            return None
        now = self._clock()
        cidr = client_network(address, self._ipv6_prefix)
        key = (cidr, offence)
        times = self._offences.get(key)
        if times is None:
            times = self._offences[key] = deque()
            if len(self._offences) > MAX_TRACKED:
                self._offences.popitem(last=False)
        else:
            self._offences.move_to_end(key)
        times.append(now)
        while times and times[0] <= now - settings.window:
            times.popleft()
        if len(times) < limit:
            return None
        times.clear()
        if self.spared(cidr):
            return Spared(cidr)
        previous = next(
            (rec for c, rec in self._state.view.blocks.lookup_all(address) if c == cidr), None
        )
        strikes = 1
        if previous is not None and (
            previous.expires_at is None or previous.expires_at > now - settings.remember
        ):
            if previous.active_at(now) and previous.source != "auto":
                return None  # already blocked by hand; leave that block alone
            strikes = previous.strikes + 1
        block = BlockRecord(
            cidr=cidr,
            reason=offence.value,
            source="auto",
            created_at=now,
            expires_at=now + block_duration(settings, strikes),
            strikes=strikes,
        )
        self._state.block(block)
        return block

    def _finish(self, flow: http.HTTPFlow) -> None:
        if AUTO_BLOCK_COUNTED.get(flow):
            return
        AUTO_BLOCK_COUNTED.set(flow, True)
        # One request counts once per kind of offence, however many rules it hit.
        offences = list(dict.fromkeys(e.offence for e in events_of(flow) if e.offence is not None))
        if not offences:
            return
        ip = client_ip(flow)
        for offence in offences:
            block = self.offend(ip, offence)
            if isinstance(block, Spared):
                record(
                    flow,
                    "ip.not_blocked",
                    Severity.MEDIUM,
                    None,
                    cidr=block.cidr,
                    reason=offence.value,
                )
                continue
            if block is not None:
                record(
                    flow,
                    "ip.blocked",
                    Severity.HIGH,
                    None,
                    cidr=block.cidr,
                    reason=block.reason,
                    strikes=block.strikes,
                    duration=round((block.expires_at or block.created_at) - block.created_at),
                )
                break

    @fail_closed()
    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)
