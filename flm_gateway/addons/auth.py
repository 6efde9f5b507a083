"""API key authentication (who is calling) and the listener scope of a key.

Policy (on `requestheaders`, after the IP filter, honeypots, intrusion
detection and CORS preflights, before rate limits and everything that reads a body):
- Which listeners require a key: `auth: api-key` always; `auth: none` never (any
  credential sent is ignored there); unset: once any key exists (declared in
  flm.yaml or ever created with `keys create`, revoked ones included, so
  revoking the last key does not open the listener).
- The health endpoints (their exact paths) never need a key. Every other path
  does, however it is spelled: there is no allow list of unauthenticated paths
  to bypass.
- The secret comes from `Authorization: Bearer` or `x-api-key`, strictly
  (`security.keys.presented_secret`): repeated or conflicting headers are
  rejected. It is hashed and looked up among declared keys, then stored ones;
  hashes are compared in constant time.
- 401 `invalid_api_key` (with `WWW-Authenticate: Bearer`) when the key is
  missing, malformed, unknown, expired, revoked or a rotated-out secret past its
  overlap; 403 `key_not_allowed_here` when the key's `listeners` scope excludes
  this listener. Model and route scopes are checked by `scopes`, once the model
  is known.
- Every failure but a missing key is recorded (`auth.failed`, offence `auth`);
  a missing key too when `auto_block.count_missing_keys` is on.
Never logs or records a secret or a header value. Writes `flm.auth.key` (the
`KeyRecord`) and `flm.auth.key_id`. Fails closed: 503 if the state is unusable
(the IP filter already answered that), 500 on an internal error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from mitmproxy import http

from flm_gateway.addons.guard import fail_closed
from flm_gateway.config import LoadedConfig
from flm_gateway.config.listeners import AuthMode
from flm_gateway.config.security import Severity
from flm_gateway.errors import error_response
from flm_gateway.security.events import Offence, record
from flm_gateway.security.keys import (
    CredentialProblem,
    declared_record,
    hash_secret,
    hashes_match,
    presented_secret,
)
from flm_gateway.security.policies import is_health_check
from flm_gateway.state.service import KeyEntry, StateService
from flm_gateway.state.store import KeyRecord

log = logging.getLogger("flm_gateway.security")


@dataclass(frozen=True)
class Verdict:
    key: KeyRecord | None
    failure: str | None = None


class Auth:
    def __init__(self, state: StateService) -> None:
        self._state = state
        self._declared: Mapping[str, KeyEntry] = {}
        self._declared_ids: frozenset[str] = frozenset()
        self._modes: Mapping[str, AuthMode | None] = {}
        self._count_missing = False

    def apply_config(self, loaded: LoadedConfig) -> None:
        config = loaded.config
        declared: dict[str, KeyEntry] = {}
        for key in config.security.keys:
            record_ = declared_record(key)
            for secret in record_.secrets:
                declared[secret.hash] = KeyEntry(record_, secret)
        self._declared = declared
        self._declared_ids = frozenset(key.id for key in config.security.keys)
        self._modes = {listener.name: listener.auth for listener in config.listeners}
        self._count_missing = config.security.auto_block.count_missing_keys
        keyed = [name for name, mode in self._modes.items() if mode is AuthMode.API_KEY]
        if keyed and not self.keys_exist():
            log.warning(
                "listener(s) %s require an API key but none exists yet; create one with "
                "`flm-gateway keys create --name NAME`",
                ", ".join(keyed),
            )

    def keys_exist(self) -> bool:
        return bool(self._declared) or bool(self._state.view.keys)

    def requires_key(self, listener: str | None) -> bool:
        mode = self._modes.get(listener or "")
        if mode is AuthMode.API_KEY:
            return True
        if mode is AuthMode.NONE:
            return False
        return self.keys_exist()

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
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or is_health_check(flow):
            return
        listener = flow.metadata.get("flm.listener")
        name = None if listener is None else listener.name
        if not self.requires_key(name):
            return
        presented = presented_secret(flow.request.headers)
        if presented.secret is None:
            failure = (presented.problem or CredentialProblem.MISSING).value
            self._refuse(flow, failure, count=failure != "missing" or self._count_missing)
            return
        verdict = self.verify(presented.secret, time.time())
        if verdict.key is None:
            self._refuse(flow, verdict.failure or "unknown", count=True)
            return
        key = verdict.key
        flow.metadata["flm.auth.key"] = key
        flow.metadata["flm.auth.key_id"] = key.id
        if key.scopes.listeners and name not in key.scopes.listeners:
            record(flow, "auth.forbidden", Severity.LOW, None, reason="listener_scope")
            flow.response = error_response(
                403, "This API key may not be used on this listener.", code="key_not_allowed_here"
            )

    def _refuse(self, flow: http.HTTPFlow, failure: str, *, count: bool) -> None:
        flow.metadata["flm.auth.failure"] = failure
        if count:
            record(flow, "auth.failed", Severity.LOW, Offence.AUTH, reason=failure)
        messages = {
            "missing": "Missing API key: send Authorization: Bearer <key> or x-api-key.",
            "ambiguous": "Send exactly one API key (one Authorization or x-api-key header).",
        }
        flow.response = error_response(
            401,
            messages.get(failure, "Invalid API key."),
            code="invalid_api_key",
            headers={"www-authenticate": 'Bearer realm="flm-gateway"'},
        )
