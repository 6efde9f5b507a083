"""Where the security addons stand in the pipeline, and that mitmproxy accepts them all."""

from __future__ import annotations

from mitmproxy.test import taddons

from flm_gateway.addons.inflight import Inflight
from flm_gateway.app.pipeline import build_addons


def _names() -> list[str]:
    return [getattr(a, "name", type(a).__name__) for a in build_addons(Inflight())]


async def test_security_order() -> None:
    names = _names()
    at = names.index
    assert at("ListenerContext") < at("StateSync") < at("ClientIp") < at("IpFilter")
    assert at("IpFilter") < at("HostCheck") < at("ResourceGuard") < at("ratelimiter-ip")
    assert at("ratelimiter-ip") < at("Health") < at("Honeypot")
    assert at("Cors") < at("ContentType") < at("Auth")
    assert at("Honeypot") < at("Intrusion") < at("Cors") < at("Auth") < at("ratelimiter-key")
    # the canonical target: after the scanners' detectors (they see the client's own
    # spelling), before everything else that reads the path
    assert at("Intrusion") < at("CanonicalTarget") < at("Cors")
    assert at("OpenAIApi") < at("RequestLimits") < at("Scopes") < at("Routing")
    assert at("Routing") < at("EngineConcurrency") < at("UpstreamGuard")
    assert at("TokenAccounting") < at("TokenCharge")
    assert names[-3:] == ["Anomaly", "AutoBlock", "Audit"]


async def test_mitmproxy_loads_every_addon_with_a_unique_name() -> None:
    addons = build_addons(Inflight())
    with taddons.context(*addons) as context:
        assert len(context.master.addons.chain) >= len(addons)
