"""ip_filter and client_ip: allow and block lists, trusted proxies, failing closed."""

from __future__ import annotations

import time
from pathlib import Path

from flm_gateway.addons.client_ip import ClientIp
from flm_gateway.addons.ip_filter import IpFilter
from flm_gateway.proxy.flow_meta import CLIENT_IP
from flm_gateway.state.store import BlockRecord
from tests.support.flows import configure, error_of
from tests.support.security import flow, loaded, opened_service, run_hooks

SECURITY = """
ip:
  allow: ["127.0.0.0/8", "10.0.0.0/8", "2001:db8::/32"]
  block: ["10.9.0.0/16"]
  trusted_proxies: ["127.0.0.2"]
"""


async def test_allow_and_configured_block(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    with opened_service(config) as service:
        addon = IpFilter(service)
        configure(config, addon)

        async def status(ip: str, path: str = "/v1/models") -> int | None:
            target = flow(config, path=path, ip=ip)
            await run_hooks([addon], target, ("requestheaders",))
            return None if target.response is None else target.response.status_code

        assert await status("127.0.0.1") is None
        assert await status("10.1.1.1") is None
        assert await status("2001:db8::5") is None
        assert await status("::ffff:10.1.1.1") is None  # IPv4-mapped is the IPv4 address
        assert await status("192.0.2.1") == 403
        assert await status("192.0.2.1", "/healthz") == 403  # health is not exempt from lists
        assert await status("10.9.3.4") == 403
        assert await status("garbage") == 403
        target = flow(config, ip="192.0.2.1")
        await run_hooks([addon], target, ("requestheaders",))
        assert error_of(target)[1]["code"] == "ip_not_allowed"


async def test_stored_blocks_apply_and_expire(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        addon = IpFilter(service)
        configure(config, addon)
        now = time.time()
        service.block(BlockRecord("192.0.2.0/24", "manual", "manual", now, now + 60))
        service.block(BlockRecord("198.51.100.7/32", "auth", "auto", now - 100, now - 1))
        target = flow(config, ip="192.0.2.44")
        await run_hooks([addon], target, ("requestheaders",))
        assert error_of(target)[1]["code"] == "ip_blocked"
        expired = flow(config, ip="198.51.100.7")
        await run_hooks([addon], expired, ("requestheaders",))
        assert expired.response is None
        service.flush_sync()
        stored = service.call_sync(lambda store: store.list_blocks())
        assert {b.cidr for b in stored} == {"192.0.2.0/24", "198.51.100.7/32"}


async def test_unusable_store_fails_closed_except_health(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        addon = IpFilter(service)
        configure(config, addon)
        service.stale_after = 0.0  # the last refresh is now "too old"
        target = flow(config)
        await run_hooks([addon], target, ("requestheaders",))
        status, error = error_of(target)
        assert (status, error["code"]) == (503, "security_state_unavailable")
        assert target.response is not None and target.response.headers["retry-after"]
        health = flow(config, path="/healthz")
        await run_hooks([addon], health, ("requestheaders",))
        assert health.response is None


async def test_forwarded_for_only_from_trusted_proxies(tmp_path: Path) -> None:
    config = loaded(SECURITY, tmp_path)
    addon = ClientIp()
    configure(config, addon)

    async def client(peer: str, *forwarded: str) -> str:
        target = flow(config, ip=peer)
        for value in forwarded:
            target.request.headers.add("x-forwarded-for", value)
        await run_hooks([addon], target, ("requestheaders",))
        return str(CLIENT_IP.require(target))

    assert await client("127.0.0.1", "203.0.113.5") == "127.0.0.1"  # not a trusted proxy
    assert await client("127.0.0.2", "203.0.113.5") == "203.0.113.5"
    # The right-most untrusted entry wins: a client cannot prepend a fake address.
    assert await client("127.0.0.2", "10.0.0.1, 203.0.113.5") == "203.0.113.5"
    assert await client("127.0.0.2", "10.0.0.1", "203.0.113.5, 127.0.0.2") == "203.0.113.5"
    assert await client("127.0.0.2", "203.0.113.5:4711") == "203.0.113.5"
    assert await client("127.0.0.2", "[2001:db8::1]:443") == "2001:db8::1"
    assert await client("127.0.0.2", "junk") == "127.0.0.2"
    assert await client("::ffff:127.0.0.2", "203.0.113.5") == "203.0.113.5"
