"""`https-acme`: certificates from an ACME CA, issued and renewed in the background.

Policy:
- The certificate (`cert.pem`, full chain) and its key (`key.pem`, 0600) live in
  `state_dir/tls/listeners/<listener>/` with `acme.json` recording the directory
  and names it was issued for. A stored certificate is served at start when it
  was issued by the same directory for the same names and has not expired.
- Until one exists, the listener serves a temporary self-signed certificate
  (in memory only) and logs a warning saying so; clients will not trust it.
- Renewal starts when `renew_before` (default 1/3) of the lifetime is left. A
  failed order is retried after `retry_initial`, doubling up to `retry_max`;
  every failure is logged with the CA's reason, and `status()` carries it.
- A new certificate replaces the served one in a single assignment: new
  handshakes get it, open connections keep the one they started with.
- All CA traffic can go through `proxy_url` (see `acme_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from pathlib import Path

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.config.tls_settings import AcmeSettings
from flm_gateway.tls.acme_challenges import ChallengeTokens
from flm_gateway.tls.dns01 import make_publisher
from flm_gateway.tls.mode import AcmeError, CertificateStatus, ServedCertificate, listener_dir
from flm_gateway.tls.pki import (
    cert_names,
    certs_to_pem,
    generate_key,
    load_certs_pem,
    make_self_signed,
    read_private_key,
    renewal_due_at,
    utcnow,
    write_file_atomic,
    write_private_key,
)

logger = logging.getLogger(__name__)

MODE = "https-acme"
MIN_PAUSE = 1.0
"""Never start two orders closer than this (a CA handing out already-due certificates)."""
MAX_SLEEP = 3600.0
"""Re-check the schedule at least hourly (clock jumps, suspend)."""


def _paths(directory: Path) -> tuple[Path, Path, Path]:
    return directory / "cert.pem", directory / "key.pem", directory / "acme.json"


def load_stored(
    directory: Path, acme_directory: str, domains: list[str]
) -> ServedCertificate | None:
    """The stored certificate when it still fits this config, else None."""
    cert_file, key_file, meta_file = _paths(directory)
    if not (cert_file.exists() and key_file.exists() and meta_file.exists()):
        return None
    try:
        meta = json.loads(meta_file.read_text())
        chain = load_certs_pem(cert_file.read_bytes())
    except (ValueError, OSError):
        logger.warning("ignoring unreadable ACME certificate files in %s", directory)
        return None
    key = read_private_key(key_file)
    leaf = chain[0]
    if (
        meta.get("directory") != acme_directory
        or sorted(meta.get("domains", [])) != sorted(domains)
        or not set(domains) <= set(cert_names(leaf))
        or leaf.public_key() != key.public_key()
        or leaf.not_valid_after_utc <= utcnow()
    ):
        return None
    return ServedCertificate(key, tuple(chain), "acme")


def check(listener: ListenerConfig, state_dir: Path) -> None:
    """Raise what `AcmeSource` would raise on the stored certificate, reading only."""
    settings = listener.tls.acme or AcmeSettings()
    load_stored(listener_dir(state_dir, listener), settings.directory, list(listener.tls.domains))


class AcmeSource:
    """Serves the listener's ACME certificate and keeps it renewed."""

    serves_tls = True

    def __init__(
        self,
        listener: ListenerConfig,
        state_dir: Path,
        *,
        ca_bundle: Path | None,
        http_tokens: ChallengeTokens | None,
        proxy_url: str | None = None,
    ) -> None:
        self._name = listener.name
        self._settings = listener.tls.acme or AcmeSettings()
        self._domains = list(listener.tls.domains)
        self._dir = listener_dir(state_dir, listener)
        publisher = make_publisher(self._settings.dns) if self._settings.dns else None
        # Imported here: the ACME client libraries (acme, josepy, requests) cost ~10 MiB of
        # memory, and only processes with an https-acme listener need them.
        from flm_gateway.tls.acme_client import AcmeOrder, AcmeRunSettings

        self._order = AcmeOrder(
            AcmeRunSettings(self._settings, ca_bundle, state_dir, proxy_url),
            http_tokens=http_tokens,
            dns_publisher=publisher,
        )
        stored = load_stored(self._dir, self._settings.directory, self._domains)
        self._served = stored or self._temporary()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.renewals = 0
        if stored is None:
            logger.warning(
                "listener %s: no ACME certificate for %s yet; serving a temporary self-signed "
                "certificate until the CA issues one",
                self._name,
                ", ".join(self._domains),
            )

    def _temporary(self) -> ServedCertificate:
        key = generate_key()
        cert = make_self_signed(
            key, self._domains, days=7, common_name=f"temporary {self._domains[0]}"
        )
        return ServedCertificate(key, (cert,), "temporary")

    def certificate_for(self, server_name: str | None) -> ServedCertificate:
        return self._served

    @property
    def has_certificate(self) -> bool:
        return self._served.origin == "acme"

    def next_attempt(self, now: datetime.datetime) -> datetime.datetime:
        if not self.has_certificate:
            return now
        return renewal_due_at(self._served.leaf, self._settings.renew_before)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"acme:{self._name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay = self._settings.retry_initial
        while True:
            wait = (self.next_attempt(utcnow()) - utcnow()).total_seconds()
            if wait > 0:
                await asyncio.sleep(min(wait, MAX_SLEEP))
                if wait > MAX_SLEEP:
                    continue
            try:
                await self.issue()
            except AcmeError as exc:
                self.last_error = str(exc)
                logger.error(
                    "listener %s: ACME order for %s failed: %s; retrying in %gs",
                    self._name,
                    ", ".join(self._domains),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_max)
                continue
            delay = self._settings.retry_initial
            await asyncio.sleep(MIN_PAUSE)

    async def issue(self) -> ServedCertificate:
        """Run one order now, store and serve its certificate; raises AcmeError."""
        renewal = self.has_certificate
        key = generate_key(self._settings.key_type.value)
        logger.info(
            "listener %s: ordering a certificate for %s from %s",
            self._name,
            ", ".join(self._domains),
            self._settings.directory,
        )
        fullchain = await self._order.obtain(self._domains, key)
        chain = tuple(load_certs_pem(fullchain))
        if chain[0].public_key() != key.public_key():
            raise AcmeError("the CA returned a certificate for a different key")
        served = ServedCertificate(key, chain, "acme")
        self._store(served)
        self._served = served
        self.last_error = None
        if renewal:
            self.renewals += 1
        leaf = served.leaf
        logger.info(
            "listener %s: %s certificate serial %x for %s, valid until %s, issued by %s",
            self._name,
            "renewed" if renewal else "obtained",
            leaf.serial_number,
            ", ".join(self._domains),
            leaf.not_valid_after_utc.isoformat(),
            leaf.issuer.rfc4514_string(),
        )
        return served

    def _store(self, served: ServedCertificate) -> None:
        cert_file, key_file, meta_file = _paths(self._dir)
        write_private_key(key_file, served.key)
        write_file_atomic(cert_file, certs_to_pem(served.chain))
        meta = {"directory": self._settings.directory, "domains": self._domains}
        write_file_atomic(meta_file, (json.dumps(meta, indent=2) + "\n").encode())

    def status(self) -> CertificateStatus:
        note = "temporary self-signed until the CA issues one" if not self.has_certificate else ""
        if self.last_error:
            note = f"{note}; last error: {self.last_error}".lstrip("; ")
        return CertificateStatus.of(self._name, MODE, self._served.leaf, note)


def inspect(listener: ListenerConfig, state_dir: Path) -> CertificateStatus:
    """The stored certificate, without contacting the CA (for `check`)."""
    cert_file = _paths(listener_dir(state_dir, listener))[0]
    if not cert_file.exists():
        return CertificateStatus(listener.name, MODE, note="not issued yet (ordered at start)")
    leaf = load_certs_pem(cert_file.read_bytes())[0]
    return CertificateStatus.of(listener.name, MODE, leaf)
