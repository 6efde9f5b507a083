"""auto_block: offences within a window block the address; repeats last longer; persisted."""

from __future__ import annotations

import time
from pathlib import Path

from mitmproxy import http

from flm_gateway.addons.auto_block import AutoBlock, block_duration
from flm_gateway.addons.ip_filter import IpFilter
from flm_gateway.config.security import AutoBlockSettings, Severity
from flm_gateway.security.events import Offence, events_of, record
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
        blocker.apply_config(config)
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
        blocker.apply_config(config)
        ip_filter = IpFilter(service)
        ip_filter.apply_config(config)
        blocker.response(_offending(config, Offence.HONEYPOT, ip="2001:db8::7"))
        assert ip_filter.is_blocked("2001:db8::7", "main", time.time())
        next_request = flow(config, ip="2001:db8::7")
        ip_filter.requestheaders(next_request)
        assert next_request.response is not None and next_request.response.status_code == 403


async def test_exempt_disabled_and_one_count_per_request(tmp_path: Path) -> None:
    config = loaded("auto_block: {intrusion_hits: 2, exempt: [10.0.0.0/8], anomalies: 0}", tmp_path)
    with opened_service(config) as service:
        blocker = AutoBlock(service)
        blocker.apply_config(config)
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
        blocker.apply_config(off)
        blocker.response(_offending(off, Offence.HONEYPOT))
        assert len(service.view.blocks) == 0


def test_duration_is_capped() -> None:
    settings = AutoBlockSettings(duration=600, growth=2, max_duration=3000)
    assert [block_duration(settings, n) for n in (1, 2, 3, 4)] == [600, 1200, 2400, 3000]


async def test_ipv6_clients_are_blocked_by_prefix(tmp_path: Path) -> None:
    config = loaded("ipv6_prefix: 64", tmp_path)
    with opened_service(config) as service:
        blocker = AutoBlock(service)
        blocker.apply_config(config)
        ip_filter = IpFilter(service)
        ip_filter.apply_config(config)
        blocker.response(_offending(config, Offence.HONEYPOT, ip="2001:db8:1:2::10"))
        now = time.time()
        assert ip_filter.is_blocked("2001:db8:1:2:ffff::1", "main", now)  # same /64
        assert not ip_filter.is_blocked("2001:db8:1:3::10", "main", now)
        assert [cidr for cidr, _ in service.view.blocks.items()] == ["2001:db8:1:2::/64"]
