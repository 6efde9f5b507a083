"""The security addons together, loaded into mitmproxy's addon manager (`taddons`) and
driven through each flow's real event sequence, in pipeline order."""

from __future__ import annotations

import time
from pathlib import Path

from mitmproxy import eventsequence, http
from mitmproxy.test import taddons

from flm_gateway.addons.anomaly import Anomaly
from flm_gateway.addons.audit import Audit
from flm_gateway.addons.auth import Auth
from flm_gateway.addons.auto_block import AutoBlock
from flm_gateway.addons.canonical_target import CanonicalTarget
from flm_gateway.addons.client_ip import ClientIp
from flm_gateway.addons.cors import Cors
from flm_gateway.addons.honeypot import Honeypot
from flm_gateway.addons.intrusion import Intrusion
from flm_gateway.addons.ip_filter import IpFilter
from flm_gateway.addons.rate_limit import RateLimiter
from flm_gateway.addons.request_limits import RequestLimits
from flm_gateway.addons.scopes import Scopes
from flm_gateway.config import LoadedConfig
from flm_gateway.security.keys import hash_secret
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import AuditQuery, KeyRecord, KeySecret
from tests.support.security import apply, flow, loaded, opened_service

SECRET = "flm-chain-secret"


def _chain(config: LoadedConfig, service: StateService) -> list[object]:
    addons: list[object] = [
        ClientIp(),
        IpFilter(service),
        RateLimiter("ip"),
        Honeypot(),
        Intrusion(),
        CanonicalTarget(),
        Cors(),
        Auth(service),
        RateLimiter("key"),
        RequestLimits(),
        Scopes(),
        Anomaly(),
        AutoBlock(service),
        Audit(service),
    ]
    apply(config, *addons)
    return addons


async def _send(context: taddons.context, target: http.HTTPFlow) -> http.HTTPFlow:
    for event in eventsequence.iterate(target):
        await context.master.addons.handle_lifecycle(event)
        if event.name == "request" and target.response is None:
            target.response = http.Response.make(200, b'{"ok": true}')  # the engine
    return target


async def test_wrong_keys_then_blocked_and_audited(tmp_path: Path) -> None:
    config = loaded("auto_block: {auth_failures: 3}", tmp_path)
    with opened_service(config) as service:
        now = time.time()
        key = KeyRecord("key_c", "c", now, (KeySecret(hash_secret(SECRET), now),))
        service.call_sync(lambda store: store.create_key(key))
        await service.refresh(force=True)
        with taddons.context(*_chain(config, service)) as context:
            ok = await _send(context, flow(config, headers={"x-api-key": SECRET}, ip="192.0.2.5"))
            assert ok.response is not None and ok.response.status_code == 200
            statuses = []
            for _ in range(4):
                attempt = flow(config, headers={"x-api-key": "flm-guess"}, ip="192.0.2.5")
                statuses.append((await _send(context, attempt)).response.status_code)  # type: ignore[union-attr]
            assert statuses == [401, 401, 401, 403]
            still = await _send(
                context, flow(config, headers={"x-api-key": SECRET}, ip="192.0.2.5")
            )
            assert still.response is not None and still.response.status_code == 403
        service.flush_sync()
        types = [r.event.type for r in service.call_sync(lambda s: s.query_audit(AuditQuery()))]
        assert types == ["config.loaded", "auth.failed", "auth.failed", "auth.failed", "ip.blocked"]


async def test_decoy_and_attack_never_need_a_key(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service, taddons.context(*_chain(config, service)) as context:
        decoy = await _send(context, flow(config, path="/wp-admin/", ip="198.51.100.1"))
        assert decoy.response is not None and decoy.response.status_code == 200
        assert "Log In" in decoy.response.text
        attack = await _send(
            context, flow(config, path="/v1/models?x=1 union select 2", ip="198.51.100.2")
        )
        assert attack.response is not None and attack.response.status_code == 403
        plain = await _send(context, flow(config, ip="198.51.100.3"))
        assert plain.response is not None and plain.response.status_code == 401


async def test_path_spellings_are_seen_raw_by_intrusion_and_canonical_by_auth(
    tmp_path: Path,
) -> None:
    """A traversal spelt with encodings is caught (and blocked) by intrusion detection before
    the canonical target refuses it; a spelling with no signature gets 400 and is audited;
    an encoded spelling of a real path reaches auth in its canonical form."""
    config = loaded("auto_block: {intrusion_hits: 1}", tmp_path)
    with opened_service(config) as service, taddons.context(*_chain(config, service)) as context:
        traversal = flow(config, path="/v1/..%2f..%2f..%2fetc%2fpasswd", ip="198.51.100.7")
        answered = await _send(context, traversal)
        assert answered.response is not None and answered.response.status_code == 403
        again = await _send(context, flow(config, ip="198.51.100.7"))
        assert again.response is not None and again.response.status_code == 403  # blocked
        refused = await _send(context, flow(config, path="/v1%2Fmodels", ip="198.51.100.8"))
        assert refused.response is not None and refused.response.status_code == 400
        spelt = await _send(context, flow(config, path="/v1/%6Dodels", ip="198.51.100.9"))
        assert spelt.response is not None and spelt.response.status_code == 401
        assert spelt.request.path == "/v1/models"
        service.flush_sync()
        types = [r.event.type for r in service.call_sync(lambda s: s.query_audit(AuditQuery()))]
    assert "intrusion.detected" in types and "ip.blocked" in types
    assert types.count("path.refused") == 1
