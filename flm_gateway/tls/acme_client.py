"""One ACME order, start to finish, with the `acme` and `josepy` packages.

Policy:
- The account key (ECDSA P-256, 0600) is created once per ACME directory under
  `state_dir/tls/acme/accounts/<sha256(directory)[:16]>/` and reused; the account
  is looked up by key on every order (a CA that forgot it simply gets a new
  registration for the same key). With `acme.eab`, a new registration carries the
  external account binding (the key id and an HMAC over the account key), as
  ZeroSSL, Google Trust Services and most commercial CAs require; a CA that wants
  one when none is configured is reported with the setting to add.
- HTTP traffic to the CA uses `requests` (inside `acme`): blocking calls run in a
  worker thread. `proxy_url` (e.g. `http://127.0.0.1:3128` or, with PySocks
  installed, `socks5h://127.0.0.1:9050`) sends all of it through an egress
  proxy; None means direct. The CA's TLS is verified against `ca_bundle` or the
  system trust store, never skipped.
- Challenges: http-01 answers are registered with the side server's
  `ChallengeTokens`; dns-01 records go through a `DnsPublisher`. Answers and
  records are always removed afterwards, also on failure.
- Errors raise `AcmeError` with one line per failed name, e.g.
  `gw.test (http-01): urn:ietf:params:acme:error:connection: ... connection refused`.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from flm_gateway.config.tls_settings import AcmeChallenge, AcmeSettings
from flm_gateway.tls.acme_challenges import ChallengeTokens
from flm_gateway.tls.dns01 import DnsPublisher
from flm_gateway.tls.mode import AcmeError, tls_root
from flm_gateway.tls.pki import (
    PrivateKey,
    key_to_pem,
    read_private_key,
    write_file_atomic,
    write_private_key,
)

EAB_REQUIRED = "urn:ietf:params:acme:error:externalAccountRequired"
logger = logging.getLogger(__name__)

USER_AGENT = "flm-gateway"


@dataclass(frozen=True)
class AcmeRunSettings:
    """Everything one order needs besides the names and the key."""

    settings: AcmeSettings
    ca_bundle: Path | None
    state_dir: Path
    proxy_url: str | None = None


def account_dir(state_dir: Path, directory: str) -> Path:
    digest = hashlib.sha256(directory.encode()).hexdigest()[:16]
    return tls_root(state_dir) / "acme" / "accounts" / digest


def load_or_create_account_key(state_dir: Path, directory: str) -> ec.EllipticCurvePrivateKey:
    path = account_dir(state_dir, directory) / "account-key.pem"
    if path.exists():
        key = read_private_key(path)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AcmeError(f"{path} is not an EC P-256 account key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(path, key)
    logger.info("created an ACME account key for %s in %s", directory, path.parent)
    return key


class AcmeOrder:
    """Obtains one certificate chain for `domains` with `key`."""

    def __init__(
        self,
        run: AcmeRunSettings,
        *,
        http_tokens: ChallengeTokens | None = None,
        dns_publisher: DnsPublisher | None = None,
    ) -> None:
        self._run = run
        self._settings = run.settings
        self._tokens = http_tokens
        self._publisher = dns_publisher

    def _client(self) -> tuple[client.ClientV2, JWKEC]:
        """Directory and account (blocking: call in a thread)."""
        settings = self._settings
        account_key = JWKEC(key=load_or_create_account_key(self._run.state_dir, settings.directory))
        verify: bool | str = str(self._run.ca_bundle) if self._run.ca_bundle else True
        net = client.ClientNetwork(
            account_key,
            alg=ES256,
            verify_ssl=verify,  # type: ignore[arg-type]  # requests accepts a CA bundle path
            user_agent=USER_AGENT,
            timeout=max(1, int(settings.timeout)),
        )
        if self._run.proxy_url:
            net.session.proxies = {"http": self._run.proxy_url, "https": self._run.proxy_url}
        directory = client.ClientV2.get_directory(settings.directory, net)
        acme = client.ClientV2(directory, net)
        binding = None
        if settings.eab is not None:
            binding = messages.ExternalAccountBinding.from_data(
                account_public_key=account_key.public_key(),
                kid=settings.eab.key_id,
                hmac_key=settings.eab.hmac_key.get_secret_value(),
                directory=directory,
            )
        registration = messages.NewRegistration.from_data(
            email=settings.email,
            terms_of_service_agreed=settings.accept_terms,
            external_account_binding=binding,
        )
        try:
            regr = acme.new_account(registration)
        except errors.ConflictError as exc:  # the key already has an account: use it
            regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
            net.account = regr
        self._save_account(regr.uri)
        return acme, account_key

    def _save_account(self, uri: str | None) -> None:
        path = account_dir(self._run.state_dir, self._settings.directory) / "account.json"
        data = json.dumps({"directory": self._settings.directory, "uri": uri}, indent=2) + "\n"
        if not path.exists() or path.read_text() != data:
            write_file_atomic(path, data.encode(), mode=0o600)

    async def obtain(self, domains: Sequence[str], key: PrivateKey) -> bytes:
        """The PEM full chain (leaf first) for `domains`; raises AcmeError."""
        try:
            return await self._obtain(domains, key)
        except AcmeError:
            raise
        except errors.ValidationError as exc:
            raise AcmeError(_describe_validation(exc)) from None
        except messages.Error as exc:
            if exc.typ == EAB_REQUIRED:
                raise AcmeError(
                    "the CA requires external account binding: set tls.acme.eab "
                    "(key_id and hmac_key, from your account at the CA)"
                ) from None
            raise AcmeError(f"the CA refused: {exc}") from None
        except errors.TimeoutError:
            raise AcmeError(
                f"the CA did not finish validation within {self._settings.validation_timeout:g}s"
            ) from None
        except Exception as exc:
            raise AcmeError(f"{type(exc).__name__}: {_short(exc)}") from exc

    async def _obtain(self, domains: Sequence[str], key: PrivateKey) -> bytes:
        settings = self._settings
        acme, account_key = await asyncio.to_thread(self._client)
        csr = crypto_util.make_csr(key_to_pem(key), list(domains))
        order = await asyncio.to_thread(acme.new_order, csr)
        wanted = (
            challenges.HTTP01 if settings.challenge == AcmeChallenge.HTTP_01 else challenges.DNS01
        )
        pending: list[tuple[messages.ChallengeBody, challenges.ChallengeResponse]] = []
        cleanups: list[tuple[str, str, str]] = []
        tokens: list[str] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                domain = authz.body.identifier.value
                challb = next(
                    (c for c in authz.body.challenges if isinstance(c.chall, wanted)), None
                )
                if challb is None:
                    offered = ", ".join(c.chall.typ for c in authz.body.challenges)
                    raise AcmeError(
                        f"{domain}: the CA offers no {wanted.typ} challenge (offered: {offered})"
                    )
                response, validation = challb.chall.response_and_validation(account_key)
                if isinstance(challb.chall, challenges.HTTP01):
                    if self._tokens is None:
                        raise AcmeError("http-01 needs the HTTP side server, which is not running")
                    token = challb.chall.encode("token")
                    self._tokens.add(token, validation)
                    tokens.append(token)
                else:
                    if self._publisher is None:
                        raise AcmeError("dns-01 needs acme.dns settings")
                    fqdn = challb.chall.validation_domain_name(domain) + "."
                    await self._publisher.present(domain, fqdn, validation)
                    cleanups.append((domain, fqdn, validation))
                pending.append((challb, response))
            if cleanups and self._settings.dns is not None and self._settings.dns.propagation_delay:
                await asyncio.sleep(self._settings.dns.propagation_delay)
            for challb, response in pending:
                await asyncio.to_thread(acme.answer_challenge, challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(
                seconds=settings.validation_timeout
            )
            finished = await asyncio.to_thread(acme.poll_and_finalize, order, deadline)
        finally:
            for token in tokens:
                if self._tokens is not None:
                    self._tokens.remove(token)
            for domain, fqdn, value in cleanups:
                try:
                    if self._publisher is not None:
                        await self._publisher.cleanup(domain, fqdn, value)
                except Exception as exc:
                    logger.warning("dns-01 cleanup of %s failed: %s", fqdn, _short(exc))
        if not finished.fullchain_pem:
            raise AcmeError("the CA finalized the order without a certificate")
        return finished.fullchain_pem.encode()


def _describe_validation(exc: errors.ValidationError) -> str:
    lines = []
    for authzr in exc.failed_authzrs:
        domain = authzr.body.identifier.value
        for challb in authzr.body.challenges:
            if challb.error is not None:
                error = challb.error
                lines.append(f"{domain} ({challb.chall.typ}): {error.typ}: {error.detail}")
        if not any(c.error for c in authzr.body.challenges):
            lines.append(f"{domain}: authorization is {authzr.body.status}")
    return "validation failed: " + "; ".join(lines)


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return text[:400]
