"""Publishing ACME DNS-01 TXT records: a command, a webhook, or RFC 2136 updates.

Each publisher has `present(domain, fqdn, value)` and `cleanup(...)`; `fqdn` is
`_acme-challenge.<domain>.` (trailing dot) and `value` the TXT content. All are
bounded by `dns.timeout`; a failure raises `DnsPublishError` with a message that
names the publisher and the record but never the webhook headers or the TSIG
secret. Cleanup failures are logged, not raised: the certificate is already
issued or failed by then.

- command: `COMMAND... present|cleanup FQDN VALUE`, no shell, with
  FLM_ACME_ACTION/FQDN/DOMAIN/VALUE in the environment; exit 0 is success.
- webhook: POST JSON {"fqdn", "value"} to URL/present and URL/cleanup (lego's
  httpreq format); any 2xx is success. Goes direct (it is usually internal).
- rfc2136: a dynamic update (add / delete the TXT rdata) to the configured
  server over TCP, TSIG-signed when a key is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from typing import Protocol

from flm_gateway.config.tls_settings import (
    DnsChallengeSettings,
    DnsWebhookSettings,
    Rfc2136Settings,
)
from flm_gateway.egress.sessions import direct_session
from flm_gateway.httpio.http_client import HttpClientError

logger = logging.getLogger(__name__)


class DnsPublishError(Exception):
    """A TXT record could not be published or removed."""


class DnsPublisher(Protocol):
    async def present(self, domain: str, fqdn: str, value: str) -> None: ...

    async def cleanup(self, domain: str, fqdn: str, value: str) -> None: ...


def make_publisher(settings: DnsChallengeSettings) -> DnsPublisher:
    if settings.command is not None:
        return CommandPublisher(settings.command, settings.timeout)
    if settings.webhook is not None:
        return WebhookPublisher(settings.webhook, settings.timeout)
    if settings.rfc2136 is not None:
        return Rfc2136Publisher(settings.rfc2136, settings.timeout)
    raise ValueError("acme.dns needs one of command, webhook or rfc2136")


class CommandPublisher:
    def __init__(self, command: list[str], timeout: float) -> None:
        self._command = list(command)
        self._timeout = timeout

    async def present(self, domain: str, fqdn: str, value: str) -> None:
        await self._run("present", domain, fqdn, value)

    async def cleanup(self, domain: str, fqdn: str, value: str) -> None:
        await self._run("cleanup", domain, fqdn, value)

    async def _run(self, action: str, domain: str, fqdn: str, value: str) -> None:
        env = dict(os.environ)
        env.update(
            FLM_ACME_ACTION=action, FLM_ACME_FQDN=fqdn, FLM_ACME_DOMAIN=domain, FLM_ACME_VALUE=value
        )
        program = self._command[0]
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command,
                action,
                fqdn,
                value,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # a timeout kills the hook and everything it started
            )
        except OSError as exc:
            raise DnsPublishError(f"dns hook {program!r} could not start: {exc.strerror}") from None
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise DnsPublishError(
                f"dns hook {program!r} {action} {fqdn} did not finish within {self._timeout:g}s"
            ) from None
        if process.returncode != 0:
            tail = " | ".join(output.decode(errors="replace").strip().splitlines())[-500:]
            raise DnsPublishError(
                f"dns hook {program!r} {action} {fqdn} exited with status {process.returncode}"
                + (f": {tail}" if tail else "")
            )


class WebhookPublisher:
    def __init__(self, settings: DnsWebhookSettings, timeout: float) -> None:
        self._url = settings.url
        typed = any(name.lower() == "content-type" for name in settings.headers)
        self._headers = [
            *([] if typed else [("Content-Type", "application/json")]),
            *settings.headers.items(),
        ]
        self._timeout = timeout

    async def present(self, domain: str, fqdn: str, value: str) -> None:
        await self._post("present", fqdn, value)

    async def cleanup(self, domain: str, fqdn: str, value: str) -> None:
        await self._post("cleanup", fqdn, value)

    async def _post(self, action: str, fqdn: str, value: str) -> None:
        url = f"{self._url}/{action}"
        body = json.dumps({"fqdn": fqdn, "value": value}).encode()
        try:
            async with direct_session() as session:
                resp = await session.request(
                    "POST", url, headers=self._headers, body=body, timeout=self._timeout
                )
        except HttpClientError as exc:
            raise DnsPublishError(f"dns webhook {url} failed for {fqdn}: {exc}") from None
        if resp.status // 100 != 2:
            text = resp.body[:300].decode(errors="replace")
            raise DnsPublishError(
                f"dns webhook {url} answered {resp.status} for {fqdn}: {text.strip()}"
            )


class Rfc2136Publisher:
    def __init__(self, settings: Rfc2136Settings, timeout: float) -> None:
        self._settings = settings
        self._timeout = timeout

    async def present(self, domain: str, fqdn: str, value: str) -> None:
        await asyncio.to_thread(self._update, "add", fqdn, value)

    async def cleanup(self, domain: str, fqdn: str, value: str) -> None:
        await asyncio.to_thread(self._update, "delete", fqdn, value)

    def _update(self, action: str, fqdn: str, value: str) -> None:
        import dns.exception
        import dns.name
        import dns.query
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype
        import dns.tsig
        import dns.tsigkeyring
        import dns.update

        settings = self._settings
        zone = dns.name.from_text(settings.zone)
        name = dns.name.from_text(fqdn)
        if not name.is_subdomain(zone):
            raise DnsPublishError(f"rfc2136: {fqdn} is not inside the zone {settings.zone}")
        keyring = None
        if settings.key_name and settings.key_secret:
            keyring = dns.tsigkeyring.from_text({settings.key_name: settings.key_secret})
        update = dns.update.Update(
            zone,
            keyring=keyring,
            keyname=dns.name.from_text(settings.key_name) if settings.key_name else None,
            keyalgorithm=dns.name.from_text(settings.key_algorithm.value),
        )
        relative = name.relativize(zone)
        quoted = '"' + value.replace('"', "") + '"'
        if action == "add":
            update.add(relative, settings.ttl, dns.rdatatype.TXT, quoted)
        else:
            update.delete(relative, dns.rdatatype.TXT, quoted)
        host, port = settings.server
        try:
            response = dns.query.tcp(update, host, port=port, timeout=self._timeout)
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsPublishError(
                f"rfc2136 {action} {fqdn} at {host}:{port} failed: {type(exc).__name__} {exc}"
            ) from None
        if response.rcode() != dns.rcode.NOERROR:
            raise DnsPublishError(
                f"rfc2136 {action} {fqdn} at {host}:{port} was refused: "
                f"{dns.rcode.to_text(response.rcode())}"
            )
