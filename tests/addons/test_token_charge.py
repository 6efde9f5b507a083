"""token_charge: real usage charged once to the admitting buckets and the key's counters."""

from __future__ import annotations

from pathlib import Path

from flm_gateway.addons.token_charge import TokenCharge
from flm_gateway.security.ratelimit import Bucket
from tests.support.security import flow, loaded, opened_service


async def test_charges_buckets_and_counters_once(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        charge = TokenCharge(service, clock=lambda: 0.0)
        ip_bucket, key_bucket = Bucket.per_minute(600, None, 0.0), Bucket.per_minute(60, None, 0.0)
        target = flow(config)
        target.metadata.update(
            {
                "flm.ratelimit.tokens.ip": [ip_bucket],
                "flm.ratelimit.tokens.key": [key_bucket],
                "flm.auth.key_id": "key_t",
                "flm.usage": {"prompt_tokens": 50, "completion_tokens": 25, "estimated": True},
            }
        )
        charge.response(target)
        charge.error(target)
        assert (ip_bucket.level, key_bucket.level) == (525.0, -15.0)
        unanswered = flow(config)
        unanswered.metadata["flm.auth.key_id"] = "key_t"
        charge.response(unanswered)  # no usage: a request, no tokens
        service.flush_sync()
        counters = service.call_sync(lambda store: store.get_counters("usage:key_t:"))
        assert counters == {"usage:key_t:requests": 2, "usage:key_t:tokens": 75}
