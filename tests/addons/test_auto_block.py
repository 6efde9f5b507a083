"""auto_block: offences within a window block the address; repeats last longer; persisted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mitmproxy import http

from flm_gateway.addons.auto_block import AutoBlock, block_duration
from flm_gateway.addons.ip_filter import IpFilter
from flm_gateway.config.security_settings import AutoBlockSettings
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.flow_meta import CLIENT_IP
from flm_gateway.security.events import Offence, events_of, record
from tests.support.flows import configure
from tests.support.security import flow, loaded, opened_service


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _offending(config, offence: Offence, ip: str = "192.0.2.9") -> http.HTTPFlow:  # type: ignore[no-untyped-def]
    target = flow(config, ip=ip)
    record(target, f"{offence.value}.test", Severity.LOW, offence)
    target.response = http.Response.make(401)
    return target


async def test_threshold_window_growth_and_persistence(tmp_path: Path) -> None:
    config = loaded(
        "auto_block: {auth_failures: 3, window: 10s, duration: 60s, growth: 3}", tmp_path
    )
    clock = Clock()
    with opened_service(config) as service:
        blocker = AutoBlock(service, clock)
        configure(config, blocker)
        for _ in range(2):
            blocker.response(_offending(config, Offence.AUTH))
        clock.now += 11  # the first two fell out of the window
        for _ in range(2):
            blocker.response(_offending(config, Offence.AUTH))
        assert len(service.view.blocks) == 0
        third = _offending(config, Offence.AUTH)
        blocker.response(third)
        (block,) = [value for _, value in service.view.blocks.items()]
        assert (block.cidr, block.strikes, block.expires_at) == ("192.0.2.9/32", 1, clock.now + 60)
        blocked_event = events_of(third)[-1]
        assert (blocked_event.type, blocked_event.details["duration"]) == ("ip.blocked", 60)

        clock.now += 61  # expired; the next block is a repeat and lasts 3x longer
        for _ in range(3):
            blocker.response(_offending(config, Offence.AUTH))
        (block,) = [value for _, value in service.view.blocks.items()]
        assert (block.strikes, block.expires_at) == (2, clock.now + 180)

        service.flush_sync()
        (stored,) = service.call_sync(lambda store: store.list_blocks())
        assert stored == block


async def test_honeypot_blocks_at_once_and_ip_filter_sees_it(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        blocker = AutoBlock(service)
        configure(config, blocker)
        ip_filter = IpFilter(service)
        configure(config, ip_filter)
        blocker.response(_offending(config, Offence.HONEYPOT, ip="2001:db8::7"))
        assert ip_filter.is_blocked("2001:db8::7", "main", time.time())
        next_request = flow(config, ip="2001:db8::7")
        ip_filter.requestheaders(next_request)
        assert next_request.response is not None and next_request.response.status_code == 403


async def test_never_block_and_disabled_and_one_count_per_request(tmp_path: Path) -> None:
    config = loaded(
        "auto_block: {intrusion_hits: 2, never_block: [10.0.0.0/8], anomalies: 0}", tmp_path
    )
    with opened_service(config) as service:
        blocker = AutoBlock(service)
        configure(config, blocker)
        for _ in range(5):
            blocker.response(_offending(config, Offence.INTRUSION, ip="10.1.1.1"))
            blocker.response(_offending(config, Offence.ANOMALY))
        assert len(service.view.blocks) == 0
        many_rules = _offending(config, Offence.INTRUSION)
        record(many_rules, "intrusion.detected", Severity.HIGH, Offence.INTRUSION)
        blocker.response(many_rules)
        blocker.error(many_rules)  # response and error of one flow count once
        assert len(service.view.blocks) == 0
    off = loaded("auto_block: {enabled: false}", tmp_path / "off")
    with opened_service(off) as service:
        blocker = AutoBlock(service)
        configure(off, blocker)
        blocker.response(_offending(off, Offence.HONEYPOT))
        assert len(service.view.blocks) == 0


LOOPBACK_SPELLINGS = ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "::ffff:7f00:2"]


@pytest.mark.parametrize("ip", LOOPBACK_SPELLINGS)
async def test_loopback_is_never_blocked_by_default(tmp_path: Path, ip: str) -> None:
    config = loaded("auto_block: {anomalies: 1}", tmp_path)
    with opened_service(config) as service:
        blocker = AutoBlock(service)
        configure(config, blocker)
        limits = {Offence.AUTH: 5, Offence.INTRUSION: 3, Offence.HONEYPOT: 1, Offence.ANOMALY: 1}
        for offence, limit in limits.items():
            flows = [_offending(config, offence, ip=ip) for _ in range(limit)]
            for target in flows:
                blocker.response(target)
            # The offence stays on record, and so does the block that was not made.
            kinds = [event.type for event in events_of(flows[-1])]
            assert kinds == [f"{offence.value}.test", "ip.not_blocked"], kinds
            spared = events_of(flows[-1])[-1]
            assert spared.details["reason"] == offence.value
            expected = {"::1": "::/64", "::ffff:127.0.0.1": "127.0.0.1/32"}.get(ip, ip + "/32")
            assert spared.details["cidr"] == expected.replace("::ffff:7f00:2/32", "127.0.0.2/32")
        assert len(service.view.blocks) == 0


@pytest.mark.parametrize(
    ("never_block", "ip", "blocked"),
    [
        ("[]", "127.0.0.1", True),  # empty: everyone can be blocked
        ("[]", "::1", True),
        ("[10.0.0.0/8]", "127.0.0.1", True),  # a list replaces the default
        ("[10.0.0.0/8]", "10.200.0.1", False),
        ("[10.0.0.0/8]", "::ffff:10.0.0.1", False),  # IPv4-mapped is the IPv4 address
        ("['::ffff:10.0.0.0/104']", "10.9.9.9", False),  # and so is a mapped network
        ("[127.0.0.1]", "127.0.0.2", True),  # one address, not the /8
        ("[127.0.0.1]", "127.0.0.1", False),
        ("[192.0.2.0/24]", "192.0.3.1", True),
        # An IPv6 client is blocked by its /64: never when that /64 holds a kept address.
        ("['2001:db8::5']", "2001:db8::6", False),
        ("['2001:db8::5']", "2001:db8:0:1::6", True),
        ("['::1']", "::2", False),
    ],
)
async def test_never_block_list(tmp_path: Path, never_block: str, ip: str, blocked: bool) -> None:
    config = loaded(f"auto_block: {{never_block: {never_block}}}", tmp_path)
    with opened_service(config) as service:
        blocker = AutoBlock(service)
        configure(config, blocker)
        target = _offending(config, Offence.HONEYPOT, ip=ip)
        blocker.response(target)
        assert (len(service.view.blocks) == 1) is blocked
        kinds = {event.type for event in events_of(target)}
        assert ("ip.blocked" in kinds, "ip.not_blocked" in kinds) == (blocked, not blocked)


async def test_the_client_behind_a_trusted_proxy_counts_not_the_proxy(tmp_path: Path) -> None:
    config = loaded("ip: {trusted_proxies: [127.0.0.1]}", tmp_path)
    with opened_service(config) as service:
        blocker = AutoBlock(service)
        configure(config, blocker)
        target = _offending(config, Offence.HONEYPOT, ip="127.0.0.1")
        CLIENT_IP.set(target, "198.51.100.7")  # as client_ip found it in XFF
        blocker.response(target)
        assert [cidr for cidr, _ in service.view.blocks.items()] == ["198.51.100.7/32"]


def test_duration_is_capped() -> None:
    settings = AutoBlockSettings(duration=600, growth=2, max_duration=3000)
    assert [block_duration(settings, n) for n in (1, 2, 3, 4)] == [600, 1200, 2400, 3000]


async def test_ipv6_clients_are_blocked_by_prefix(tmp_path: Path) -> None:
    config = loaded("ipv6_prefix: 64", tmp_path)
    with opened_service(config) as service:
        blocker = AutoBlock(service)
        configure(config, blocker)
        ip_filter = IpFilter(service)
        configure(config, ip_filter)
        blocker.response(_offending(config, Offence.HONEYPOT, ip="2001:db8:1:2::10"))
        now = time.time()
        assert ip_filter.is_blocked("2001:db8:1:2:ffff::1", "main", now)  # same /64
        assert not ip_filter.is_blocked("2001:db8:1:3::10", "main", now)
        assert [cidr for cidr, _ in service.view.blocks.items()] == ["2001:db8:1:2::/64"]
