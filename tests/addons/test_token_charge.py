"""token_charge: real usage charged once to the admitting buckets and the key's counters,
only for requests that reached an engine."""

from __future__ import annotations

from pathlib import Path

from mitmproxy import http

from flm_gateway.addons.token_charge import TokenCharge
from flm_gateway.config import LoadedConfig
from flm_gateway.proxy.flow_meta import RATELIMIT_TOKENS_KEY
from flm_gateway.security.ratelimit import Bucket
from flm_gateway.state.state_service import StateService
from tests.support.security import flow, loaded, opened_service

USAGE = {"prompt_tokens": 50, "completion_tokens": 25, "estimated": True}


def forwarded(config: LoadedConfig, **metadata: object) -> http.HTTPFlow:
    """A keyed flow the gateway forwarded to engine alpha (tflow's server connection is set up)."""
    target = flow(config)
    target.metadata.update({"flm.auth.key_id": "key_t", "flm.route.engine": "alpha", **metadata})
    assert target.server_conn.timestamp_tcp_setup is not None
    return target


def counters(service: StateService) -> dict[str, int]:
    service.flush_sync()
    return service.call_sync(lambda store: store.get_counters("usage:key_t:"))


async def test_charges_buckets_and_counters_once(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        charge = TokenCharge(service, clock=lambda: 0.0)
        ip_bucket, key_bucket = Bucket.per_minute(600, None, 0.0), Bucket.per_minute(60, None, 0.0)
        target = forwarded(
            config,
            **{
                "flm.ratelimit.tokens.ip": [ip_bucket],
                "flm.ratelimit.tokens.key": [key_bucket],
                "flm.usage": USAGE,
            },
        )
        charge.response(target)
        charge.error(target)
        assert (ip_bucket.level, key_bucket.level) == (525.0, -15.0)
        charge.response(forwarded(config))  # no usage reported: a request, no tokens
        assert counters(service) == {"usage:key_t:requests": 2, "usage:key_t:tokens": 75}


async def test_what_never_reached_an_engine_is_not_usage(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        charge = TokenCharge(service, clock=lambda: 0.0)
        bucket = Bucket.per_minute(60, None, 0.0)
        refused = flow(config)  # 429, 403, 400, /v1/models: the gateway answered itself
        refused.metadata.update({"flm.auth.key_id": "key_t", "flm.ratelimit.tokens.key": [bucket]})
        refused.response = http.Response.make(429)
        not_connected = forwarded(config, **{"flm.usage": USAGE})  # probe ok, connect failed
        not_connected.server_conn.timestamp_tcp_setup = None
        proxy_failed = forwarded(config, **{"flm.usage": USAGE, "flm.egress.failure": object()})
        for target in (refused, not_connected, proxy_failed):
            RATELIMIT_TOKENS_KEY.set(target, [bucket])
            charge.response(target)
        assert counters(service) == {}
        assert bucket.level == 60.0
        charge.response(forwarded(config))  # the control: this one counts
        assert counters(service) == {"usage:key_t:requests": 1}
