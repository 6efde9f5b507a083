"""API key authentication (who is calling) and the listener scope of a key.

Policy (on `requestheaders`, after the IP filter, honeypots, intrusion
detection and CORS preflights, before rate limits and everything that reads a body):
- Which listeners require a key is decided by flm.yaml alone
  (`config.listeners.requires_api_key`): `auth: api-key` always; `auth: none`
  never (any credential sent is ignored there); unset (loopback only) never.
  Creating, scoping or revoking a key changes no listener. The start log (and
  each reload) says where keys are required, and warns when a listener requires
  keys while none exists, or keys exist while no listener requires them.
- The health endpoints (their exact paths) never need a key. Every other path
  does, however it is spelled: there is no allow list of unauthenticated paths
  to bypass.
- The secret comes from `Authorization: Bearer` or `x-api-key`, strictly
  (`security.keys.presented_secret`): repeated or conflicting headers are
  rejected. It is hashed and looked up among declared keys, then stored ones;
  hashes are compared in constant time.
- **A new key works at once.** A secret the in-memory view does not know, but
  shaped like a generated one (`security.keys.may_be_stored`), waits for a check
  of the store made after it arrived (`StateService.check_new_keys`: shared,
  paced, at most 2 s) and is then judged on that. If the store does not answer:
  503 `security_state_unavailable`, never a 401 that would count against a
  client whose key may be valid.
- Refusals, all 401 with `WWW-Authenticate: Bearer` (`REFUSALS`):
  `invalid_api_key` for a missing, malformed, ambiguous or unknown key;
  `expired_api_key` for an expired key or a rotated-out secret past its
  overlap; `revoked_api_key` for a revoked key. Telling these apart reveals
  nothing to a guesser: only a holder of a once-valid 256-bit secret sees them.
  403 `key_not_allowed_here` when the key's `listeners` scope excludes this
  listener. Model and route scopes are checked by `scopes`, once the model
  is known.
- Every failure but a missing key is recorded (`auth.failed` with the reason;
  a revoked key at severity medium: it is often revoked because it leaked).
  Only unknown, malformed and ambiguous keys are auto-block offences (`auth`),
  and a missing key when `auto_block.count_missing_keys` is on: guessing never
  produces an expired or revoked key, and blocking the address of a client with
  a lapsed key would block everyone behind its NAT.
Never logs or records a secret or a header value. Writes `flm.auth.key` (the
`KeyRecord`), `flm.auth.key_id` and, when refused, `flm.auth.failure`. Fails
closed: 503 if the state is unusable (the IP filter already answered that),
500 on an internal error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

from mitmproxy import http

from flm_gateway.config.listener_settings import auth_summary, requires_api_key
from flm_gateway.core.errors import error_response
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import AUTH_FAILURE, AUTH_KEY, AUTH_KEY_ID
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.events import Offence, record
from flm_gateway.security.keys import (
    CredentialProblem,
    Presented,
    declared_record,
    hash_secret,
    hashes_match,
    key_allowed_on,
    may_be_stored,
    presented_secret,
)
from flm_gateway.security.policies import is_health_check, listener_name
from flm_gateway.state.state_service import KeyEntry, StateService
from flm_gateway.state.store import KeyRecord

log = logging.getLogger("flm_gateway.security")


@dataclass(frozen=True)
class Verdict:
    key: KeyRecord | None
    failure: str | None = None


@dataclass(frozen=True)
class Refusal:
    """How one kind of authentication failure is answered and recorded."""

    message: str
    code: str = "invalid_api_key"
    offence: bool = True
    """Counts towards auto-block (`missing` follows `auto_block.count_missing_keys`)."""
    severity: Severity = Severity.LOW


_INVALID = Refusal("Invalid API key.")
_EXPIRED = Refusal("This API key has expired.", "expired_api_key", offence=False)
REFUSALS: Mapping[str, Refusal] = {
    "missing": Refusal(
        "Missing API key: send Authorization: Bearer <key> or x-api-key.", offence=False
    ),
    "ambiguous": Refusal("Send exactly one API key (one Authorization or x-api-key header)."),
    "malformed": _INVALID,
    "unknown": _INVALID,
    "expired": _EXPIRED,
    "rotated": _EXPIRED,  # a rotated-out secret expires when its overlap ends
    "revoked": Refusal(
        "This API key has been revoked.", "revoked_api_key", offence=False, severity=Severity.MEDIUM
    ),
}
CHALLENGE = {"www-authenticate": 'Bearer realm="flm-gateway"'}


@dataclass(frozen=True)
class _Keys:
    """What auth reads per request, for one config."""

    declared: Mapping[str, KeyEntry]
    declared_ids: frozenset[str]
    keyed: frozenset[str]
    names: frozenset[str]
    count_missing: bool
    summary: tuple[str, ...]


class Auth:
    def __init__(self, state: StateService) -> None:
        self._state = state
        self._declared: Mapping[str, KeyEntry] = {}
        self._declared_ids: frozenset[str] = frozenset()
        self._keyed: frozenset[str] = frozenset()
        self._names: frozenset[str] = frozenset()
        self._count_missing = False

    def prepare(self, runtime: Runtime) -> _Keys:
        config = runtime.loaded.config
        declared: dict[str, KeyEntry] = {}
        for key in config.security.keys:
            record_ = declared_record(key)
            for secret in record_.secrets:
                declared[secret.hash] = KeyEntry(record_, secret)
        return _Keys(
            declared=declared,
            declared_ids=frozenset(key.id for key in config.security.keys),
            keyed=frozenset(
                listener.name for listener in config.listeners if requires_api_key(listener)
            ),
            names=frozenset(listener.name for listener in config.listeners),
            count_missing=config.security.auto_block.count_missing_keys,
            summary=tuple(auth_summary(config.listeners)),
        )

    def commit(self, prepared: _Keys) -> None:
        self._declared, self._declared_ids = prepared.declared, prepared.declared_ids
        self._keyed, self._names = prepared.keyed, prepared.names
        self._count_missing = prepared.count_missing
        for line in prepared.summary:
            log.info("%s", line)
        if self._keyed and not self.keys_exist():
            log.warning(
                "no API key exists yet, so every request to %s gets 401; create one with "
                "`flm-gateway keys create --name NAME`",
                ", ".join(sorted(self._keyed)),
            )
        elif not self._keyed and self.keys_exist():
            log.warning(
                "API keys exist but no listener requires one (set auth: api-key on the "
                "listeners that should)"
            )

    def keys_exist(self) -> bool:
        return bool(self._declared) or bool(self._state.view.keys)

    def requires_key(self, listener: str | None) -> bool:
        """flm.yaml's rule for `listener`. A flow without a listener (removed by a reload
        while its connection lives on) is answered 503 by `listener_context` before
        anything forwards it; a listener this config does not know needs a key."""
        if listener is None:
            return False
        return listener not in self._names or listener in self._keyed

    def verify(self, secret: str, now: float) -> Verdict:
        """The key `secret` belongs to, or why it is refused."""
        digest = hash_secret(secret)
        entry = self._declared.get(digest)
        if entry is None:
            entry = self._state.view.by_hash.get(digest)
            if entry is not None and entry.key.id in self._declared_ids:
                entry = None  # flm.yaml owns this id; a stored key cannot shadow it
        if entry is None or not hashes_match(entry.secret.hash, digest):
            return Verdict(None, "unknown")
        status = entry.key.status(now)
        if status != "active":
            return Verdict(None, status)
        if not entry.secret.valid_at(now):
            return Verdict(None, "rotated")
        return Verdict(entry.key)

    @fail_closed(503)
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response is not None or is_health_check(flow):
            return None
        listener = listener_name(flow)
        if not self.requires_key(listener):
            return None
        presented = presented_secret(flow.request.headers)
        if self._decide(flow, presented, listener, final=False):
            return None
        return self._decide_after_key_check(flow, presented, listener)

    def _decide(
        self, flow: http.HTTPFlow, presented: Presented, listener: str | None, *, final: bool
    ) -> bool:
        """Let `flow` through (with its key) or refuse it, on the current view.

        Unless `final`, returns False without deciding when a check of the store for
        new keys could change the answer (see the module docstring).
        """
        secret = presented.secret
        if secret is None:
            self._refuse(flow, (presented.problem or CredentialProblem.MISSING).value)
            return True
        verdict = self.verify(secret, time.time())
        if verdict.key is None:
            if verdict.failure == "unknown" and not final and may_be_stored(secret):
                return False
            self._refuse(flow, verdict.failure or "unknown")
            return True
        key = verdict.key
        AUTH_KEY.set(flow, key)
        AUTH_KEY_ID.set(flow, key.id)
        if not key_allowed_on(key, listener):
            record(flow, "auth.forbidden", Severity.LOW, None, reason="listener_scope")
            flow.response = error_response(
                403, "This API key may not be used on this listener.", code="key_not_allowed_here"
            )
        return True

    async def _decide_after_key_check(
        self, flow: http.HTTPFlow, presented: Presented, listener: str | None
    ) -> None:
        if await self._state.check_new_keys():
            self._decide(flow, presented, listener, final=True)
            return
        # The key may be valid: refusing it as unknown would count it as a guess.
        AUTH_FAILURE.set(flow, "unavailable")
        flow.response = error_response(
            503,
            "The gateway's security state is unavailable; retry shortly.",
            code="security_state_unavailable",
            headers={"retry-after": "5"},
        )

    def _refuse(self, flow: http.HTTPFlow, failure: str) -> None:
        refusal = REFUSALS.get(failure, _INVALID)
        AUTH_FAILURE.set(flow, failure)
        counts = refusal.offence or (failure == "missing" and self._count_missing)
        if failure != "missing" or counts:
            offence = Offence.AUTH if counts else None
            record(flow, "auth.failed", refusal.severity, offence, reason=failure)
        flow.response = error_response(401, refusal.message, code=refusal.code, headers=CHALLENGE)
