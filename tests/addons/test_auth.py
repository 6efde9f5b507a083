"""auth: API keys from the store and flm.yaml, strict headers, expiry, rotation, scopes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
from mitmproxy import http

from flm_gateway.addons.auth import Auth
from flm_gateway.addons.token_charge import TokenCharge
from flm_gateway.config import LoadedConfig
from flm_gateway.proxy.flow_meta import AUTH_FAILURE, AUTH_KEY, AUTH_KEY_ID, ROUTE_ENGINE, USAGE
from flm_gateway.security.events import events_of
from flm_gateway.security.keys import generate_secret, hash_secret
from flm_gateway.state import open_store
from flm_gateway.state.state_service import StateService
from flm_gateway.state.store import KeyRecord, KeyScopes, KeySecret
from tests.support.flows import configure, error_of
from tests.support.security import BASE, flow, loaded, opened_service, run_hooks

SECRET = "flm-test-secret-one"
DECLARED = "flm-declared-secret"


def _store_key(service: StateService, key_id: str = "key_a", **changes: object) -> None:
    now = time.time()
    record = KeyRecord(
        id=key_id, name="a", created_at=now, secrets=(KeySecret(hash_secret(SECRET), now),)
    )
    record = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
    service.call_sync(lambda store: store.create_key(record))


async def _check(
    auth: Auth,
    config: LoadedConfig,
    headers: dict[str, str],
    path: str = "/v1/models",
    port: int = 8088,
) -> http.HTTPFlow:
    target = flow(config, path=path, headers=headers, port=port)
    await run_hooks([auth], target, ("requestheaders",))
    return target


async def test_store_and_declared_keys(tmp_path: Path) -> None:
    config = loaded(
        f"""
keys:
  - id: ci
    hash: {hash_secret(DECLARED)}
    scopes: {{listeners: [main]}}
""",
        tmp_path,
    )
    with opened_service(config) as service:
        _store_key(service)
        await service.refresh(force=True)
        auth = Auth(service)
        configure(config, auth)
        ok = await _check(auth, config, {"authorization": f"Bearer {SECRET}"})
        assert ok.response is None and AUTH_KEY_ID.require(ok) == "key_a"
        declared = await _check(auth, config, {"x-api-key": DECLARED})
        assert declared.response is None and AUTH_KEY_ID.require(declared) == "ci"
        missing = await _check(auth, config, {})
        assert error_of(missing)[0] == 401 and missing.response is not None
        assert missing.response.headers["www-authenticate"].startswith("Bearer")
        assert events_of(missing) == []  # a missing key is not an offence by default
        wrong = await _check(auth, config, {"authorization": "Bearer flm-wrong"})
        status, error = error_of(wrong)
        assert (status, error["code"]) == (401, "invalid_api_key")
        assert [e.type for e in events_of(wrong)] == ["auth.failed"]
        assert "flm-wrong" not in repr(events_of(wrong)) and "flm-wrong" not in error["message"]
        both = await _check(
            auth, config, {"authorization": f"Bearer {SECRET}", "x-api-key": DECLARED}
        )
        assert error_of(both)[0] == 401
        health = await _check(auth, config, {}, path="/healthz")
        assert health.response is None
        sneaky = await _check(auth, config, {}, path="/healthz/../v1/models")
        assert error_of(sneaky)[0] == 401
        open_listener = await _check(auth, config, {}, port=8089)
        assert open_listener.response is None and not AUTH_KEY.is_set(open_listener)


async def test_listener_scope_is_403(tmp_path: Path) -> None:
    config = loaded("", tmp_path, base=BASE.replace("auth: none", "auth: api-key"))
    with opened_service(config) as service:
        _store_key(service, scopes=KeyScopes(listeners=("main",)))
        await service.refresh(force=True)
        auth = Auth(service)
        configure(config, auth)
        assert (await _check(auth, config, {"x-api-key": SECRET})).response is None
        other = await _check(auth, config, {"x-api-key": SECRET}, port=8089)
        status, error = error_of(other)
        assert (status, error["code"]) == (403, "key_not_allowed_here")


async def test_expired_revoked_and_rotated(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    now = time.time()
    with opened_service(config) as service:
        _store_key(service, "key_exp", expires_at=now - 1)
        await service.refresh(force=True)
        auth = Auth(service)
        configure(config, auth)
        assert auth.verify(SECRET, now).failure == "expired"
        service.call_sync(lambda store: store.revoke_key("key_exp", now - 1))
        await service.refresh(force=True)
        assert auth.verify(SECRET, now).failure == "revoked"

    config = loaded("", tmp_path / "b")
    with opened_service(config) as service:
        _store_key(service, "key_rot")
        new = "flm-rotated-new"
        service.call_sync(
            lambda store: store.add_key_secret(
                "key_rot", KeySecret(hash_secret(new), now), now + 60
            )
        )
        await service.refresh(force=True)
        auth = Auth(service)
        configure(config, auth)
        assert auth.verify(SECRET, now).key is not None  # inside the overlap
        assert auth.verify(new, now).key is not None
        assert auth.verify(SECRET, now + 61).failure == "rotated"
        assert auth.verify(new, now + 61).key is not None


TWO_LISTENERS = """\
listeners:
  - {name: keyed, bind: "127.0.0.1:8088", auth: api-key}
  - {name: local, bind: "127.0.0.1:8089"}
"""


async def test_keys_never_change_which_listeners_require_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """flm.yaml alone decides: a key scoped to `keyed`, an unscoped one, their revocation."""
    config = loaded("", tmp_path, base=TWO_LISTENERS)
    with opened_service(config) as service:
        auth = Auth(service)
        configure(config, auth)
        assert "no API key exists yet, so every request to keyed gets 401" in caplog.text
        assert (await _check(auth, config, {}, port=8089)).response is None
        assert error_of(await _check(auth, config, {}, port=8088))[0] == 401
        _store_key(service, scopes=KeyScopes(listeners=("keyed",)))
        await service.refresh(force=True)
        assert (await _check(auth, config, {}, port=8089)).response is None
        assert (await _check(auth, config, {"x-api-key": SECRET}, port=8088)).response is None
        _store_key(service, "key_b", secrets=(KeySecret(hash_secret(DECLARED), time.time()),))
        await service.refresh(force=True)
        assert (await _check(auth, config, {}, port=8089)).response is None
        for key_id in ("key_a", "key_b"):
            service.call_sync(lambda store, k=key_id: store.revoke_key(k, time.time()))
        await service.refresh(force=True)
        assert (await _check(auth, config, {}, port=8089)).response is None
        revoked = await _check(auth, config, {"x-api-key": SECRET}, port=8088)
        assert error_of(revoked)[1]["code"] == "revoked_api_key"


async def test_the_start_log_says_where_keys_are_required(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="flm_gateway.security")
    config = loaded("", tmp_path, base=TWO_LISTENERS)
    with opened_service(config) as service:
        _store_key(service)
        await service.refresh(force=True)
        configure(config, Auth(service))
        assert "API keys are required on: keyed" in caplog.text
        assert "no API key is needed on: local (loopback, no auth:)" in caplog.text
        assert "every request" not in caplog.text  # a key exists
        caplog.clear()
        only_local = loaded("", tmp_path, base=TWO_LISTENERS.replace(", auth: api-key", ""))
        configure(only_local, Auth(service))
        assert "API keys are required on: no listener" in caplog.text
        assert "API keys exist but no listener requires one" in caplog.text


async def test_count_missing_keys_makes_missing_an_offence(tmp_path: Path) -> None:
    config = loaded("auto_block: {count_missing_keys: true}", tmp_path)
    with opened_service(config) as service:
        auth = Auth(service)
        configure(config, auth)
        target = await _check(auth, config, {})
        assert [e.offence for e in events_of(target)] == ["auth"]


async def test_key_usage_is_counted(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        _store_key(service)
        await service.refresh(force=True)
        auth = Auth(service)
        configure(config, auth)
        target = await _check(auth, config, {"x-api-key": SECRET})
        ROUTE_ENGINE.set(target, "alpha")  # forwarded to an engine
        USAGE.set(
            target,
            {
                "prompt_tokens": 3,
                "completion_tokens": 4,
                "estimated": False,
            },
        )
        TokenCharge(service).response(target)
        service.flush_sync()
        counters = service.call_sync(lambda store: store.get_counters("usage:key_a:"))
        assert counters == {"usage:key_a:requests": 1, "usage:key_a:tokens": 7}


# -- key lifecycle: a new key at once, its own answer per failure ---------------


def _new_key_in_store(config: LoadedConfig, key_id: str = "key_new", **changes: object) -> str:
    """Create a key as `keys create` does, from another connection: the view has not seen it."""
    secret = generate_secret()
    now = time.time()
    record = KeyRecord(key_id, "new", now, (KeySecret(hash_secret(secret), now),))
    record = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
    store = open_store(config)
    try:
        store.create_key(record)
    finally:
        store.close()
    return secret


async def test_a_new_key_works_at_once_and_is_no_auth_failure(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        auth = Auth(service)
        configure(config, auth)
        secret = _new_key_in_store(config)
        assert hash_secret(secret) not in service.view.by_hash  # the view has not seen it
        first = await _check(auth, config, {"authorization": f"Bearer {secret}"})
        assert first.response is None and AUTH_KEY_ID.require(first) == "key_new"
        assert events_of(first) == [] and not AUTH_FAILURE.is_set(first)


async def test_unknown_keys_share_paced_store_checks(tmp_path: Path) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        auth = Auth(service)
        configure(config, auth)
        guesses = [generate_secret() for _ in range(300)]
        flows = await asyncio.gather(
            *(_check(auth, config, {"x-api-key": guess}) for guess in guesses)
        )
        for target in flows:
            status, error = error_of(target)
            assert (status, error["code"]) == (401, "invalid_api_key")
            assert [e.offence for e in events_of(target)] == ["auth"]  # guesses still count
        assert service.key_checks <= 2  # not one store read per guess
        checks = service.key_checks
        for garbage in ("flm-short", "sk-" + "a" * 48, "x" * 47):
            await _check(auth, config, {"x-api-key": garbage})
        assert service.key_checks == checks  # never shaped like ours: no store read


async def test_store_not_answering_is_503_not_an_auth_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = loaded("", tmp_path)
    with opened_service(config) as service:
        auth = Auth(service)
        configure(config, auth)

        async def no_answer() -> bool:
            return False

        monkeypatch.setattr(service, "check_new_keys", no_answer)
        target = await _check(auth, config, {"x-api-key": generate_secret()})
        status, error = error_of(target)
        assert (status, error["code"]) == (503, "security_state_unavailable")
        assert events_of(target) == [] and target.response is not None
        assert target.response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("state", "code", "message", "severity"),
    [
        ("expired", "expired_api_key", "This API key has expired.", "low"),
        ("rotated", "expired_api_key", "This API key has expired.", "low"),
        ("revoked", "revoked_api_key", "This API key has been revoked.", "medium"),
    ],
)
async def test_expired_revoked_and_rotated_get_their_own_answer(
    tmp_path: Path, state: str, code: str, message: str, severity: str
) -> None:
    config = loaded("", tmp_path)
    now = time.time()
    with opened_service(config) as service:
        changes: dict[str, object] = {
            "expired": {"expires_at": now - 1},
            "revoked": {"revoked_at": now - 1},
            "rotated": {},
        }[state]
        secret = _new_key_in_store(config, **changes)
        if state == "rotated":
            rotated = KeySecret(hash_secret(generate_secret()), now)
            service.call_sync(lambda store: store.add_key_secret("key_new", rotated, now - 1))
        await service.refresh(force=True)
        auth = Auth(service)
        configure(config, auth)
        target = await _check(auth, config, {"authorization": f"Bearer {secret}"})
        status, error = error_of(target)
        assert (status, error["code"], error["message"]) == (401, code, message)
        assert target.response is not None and "www-authenticate" in target.response.headers
        (event,) = events_of(target)
        assert (event.type, event.details["reason"], event.severity) == (
            "auth.failed",
            state,
            severity,
        )
        assert event.offence is None  # a lapsed key is not a guess: no auto-block
        assert AUTH_FAILURE.require(target) == state
