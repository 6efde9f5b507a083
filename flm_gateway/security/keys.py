"""API key secrets: how they are made, hashed, presented and checked.

- A secret is `flm-` followed by 32 random bytes, URL-safe base64 (256 bits).
  It is shown once, when created; the store keeps only `sha256:<hex>` of it.
- SHA-256 (not a slow password hash) is the right tool here: the secret is
  uniformly random with 256 bits of entropy, so a leaked hash cannot be brute
  forced, and checking it costs microseconds per request. Slow hashes exist
  for low-entropy human passwords.
- The key **id** (`key_` + 12 hex digits, or the id declared in flm.yaml) is
  public: it names the key in logs, the audit log, metrics and scopes.
- Clients present the secret as `Authorization: Bearer <secret>` or
  `x-api-key: <secret>`. Any repeated header, another scheme, or both headers
  with different values is rejected as ambiguous: a proxy and the gateway must
  never disagree about which credential counts.
- The presented secret is hashed and looked up; the stored hash is then
  compared with `hmac.compare_digest`. The lookup's timing can at most reveal
  how a hash of the attacker's own guess compares with a stored hash, which
  says nothing about a random 256-bit preimage.
- Only a secret shaped like the ones `generate_secret` makes (`may_be_stored`)
  can be a stored key the gateway has not seen yet; anything else is refused
  without asking the store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mitmproxy.http import Headers

from flm_gateway.config.listener_settings import ListenerConfig, requires_api_key
from flm_gateway.config.security_settings import DeclaredKey
from flm_gateway.state.store import KeyLimits, KeyRecord, KeyScopes, KeySecret

SECRET_PREFIX = "flm-"
_BEARER_RE = re.compile(r"^\s*bearer[ \t]+(\S+)\s*$", re.IGNORECASE)
_TOKEN_RE = re.compile(r"^[\x21-\x7e]{1,512}$")
_GENERATED_RE = re.compile(r"^flm-[A-Za-z0-9_-]{43}$")


def generate_secret() -> str:
    """A new random key secret."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def generate_key_id() -> str:
    """A new public key id."""
    return "key_" + secrets.token_hex(6)


def may_be_stored(secret: str) -> bool:
    """Whether `secret` has the shape of a generated one (`keys create`, `keys rotate`)."""
    return _GENERATED_RE.match(secret) is not None


def hash_secret(secret: str) -> str:
    """`sha256:<hex>` of a secret, as stored and as declared in flm.yaml."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def hashes_match(stored: str, presented_hash: str) -> bool:
    """Constant-time comparison of two `sha256:` hashes."""
    return hmac.compare_digest(stored.encode(), presented_hash.encode())


class CredentialProblem(StrEnum):
    MISSING = "missing"
    AMBIGUOUS = "ambiguous"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Presented:
    """The secret a request carries, or why it carries none usable."""

    secret: str | None
    problem: CredentialProblem | None = None


def presented_secret(headers: Headers) -> Presented:
    """The one secret in `Authorization: Bearer` / `x-api-key`, strictly parsed."""
    authorization = headers.get_all("authorization")
    api_key = headers.get_all("x-api-key")
    if len(authorization) > 1 or len(api_key) > 1:
        return Presented(None, CredentialProblem.AMBIGUOUS)
    candidates: list[str] = []
    if authorization:
        match = _BEARER_RE.match(authorization[0])
        if match is None:
            return Presented(None, CredentialProblem.MALFORMED)
        candidates.append(match.group(1))
    if api_key:
        candidates.append(api_key[0].strip())
    if not candidates:
        return Presented(None, CredentialProblem.MISSING)
    if len(set(candidates)) > 1:
        return Presented(None, CredentialProblem.AMBIGUOUS)
    secret = candidates[0]
    if not _TOKEN_RE.match(secret):
        return Presented(None, CredentialProblem.MALFORMED)
    return Presented(secret)


def declared_record(key: DeclaredKey) -> KeyRecord:
    """A `KeyRecord` for a key declared in flm.yaml."""
    return KeyRecord(
        id=key.id,
        name=key.name or key.id,
        created_at=0.0,
        secrets=tuple(KeySecret(h, 0.0) for h in key.hashes),
        scopes=KeyScopes(
            models=tuple(key.scopes.models),
            routes=tuple(key.scopes.routes),
            listeners=tuple(key.scopes.listeners),
        ),
        limits=KeyLimits(
            requests_per_minute=key.limits.requests_per_minute,
            tokens_per_minute=key.limits.tokens_per_minute,
            max_tokens=key.limits.max_tokens,
        ),
        expires_at=key.expires_at,
        source="config",
    )


def all_keys(declared: Iterable[DeclaredKey], stored: Iterable[KeyRecord]) -> list[KeyRecord]:
    """Every key the gateway knows: flm.yaml's, then the store's (an id in flm.yaml wins)."""
    keys = [declared_record(key) for key in declared]
    ids = {key.id for key in keys}
    return keys + [key for key in stored if key.id not in ids]


def key_allowed_on(key: KeyRecord, listener: str | None) -> bool:
    """Whether `key` may be used on `listener`: its `listeners` scope is empty or names it
    (elsewhere `auth` answers 403 `key_not_allowed_here`)."""
    return not key.scopes.listeners or listener in key.scopes.listeners


def keyless_listeners(
    listeners: Sequence[ListenerConfig], keys: Iterable[KeyRecord], now: float
) -> list[str]:
    """Listeners that require a key while no active key may be used there: every
    request to them is refused (401, or 403 for a key scoped elsewhere)."""
    usable = [key for key in keys if key.status(now) == "active"]
    return [
        listener.name
        for listener in listeners
        if requires_api_key(listener)
        and not any(key_allowed_on(key, listener.name) for key in usable)
    ]
