"""The `tls:` block of a listener: which TLS mode serves it and the mode's settings.

Four modes (see docs/tls.md):
- `local-http`: plain HTTP; a TLS ClientHello is refused.
- `dev-selfsigned`: a self-signed certificate kept in the state directory.
- `packaged-ca`: leaf certificates issued on demand from a local root CA that
  `flm-gateway ca install` puts into the OS trust store.
- `https-acme`: certificates from an ACME CA (HTTP-01 or DNS-01), renewed automatically.

Cross-field rules (e.g. `acme:` only with `https-acme`, wildcards only with DNS-01)
live in `flm_gateway.config.tls_checks`.
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from flm_gateway.config.types import Duration, HostPort, StrictModel, http_url_parts

LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class TlsMode(StrEnum):
    LOCAL_HTTP = "local-http"
    DEV_SELFSIGNED = "dev-selfsigned"
    HTTPS_ACME = "https-acme"
    PACKAGED_CA = "packaged-ca"


class TlsVersion(StrEnum):
    TLS1_2 = "TLS1.2"
    TLS1_3 = "TLS1.3"


class AcmeChallenge(StrEnum):
    HTTP_01 = "http-01"
    DNS_01 = "dns-01"


class AcmeKeyType(StrEnum):
    EC256 = "ec256"
    EC384 = "ec384"
    RSA2048 = "rsa2048"
    RSA4096 = "rsa4096"


class TsigAlgorithm(StrEnum):
    HMAC_SHA256 = "hmac-sha256"
    HMAC_SHA384 = "hmac-sha384"
    HMAC_SHA512 = "hmac-sha512"


class DnsWebhookSettings(StrictModel):
    """An HTTP endpoint that publishes and removes the DNS-01 TXT record."""

    url: str = Field(
        description=(
            'Base URL; the gateway POSTs JSON {"fqdn": "_acme-challenge.example.com.", '
            '"value": "..."} to URL/present before validation and to URL/cleanup after it '
            "(the format of lego's httpreq provider)."
        )
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Extra request headers, e.g. {Authorization: "Bearer ${DNS_TOKEN}"}. Their values '
            "are never logged."
        ),
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        http_url_parts(value)  # raises when it is not one
        return value.rstrip("/")


class Rfc2136Settings(StrictModel):
    """An authoritative DNS server that accepts RFC 2136 dynamic updates signed with TSIG."""

    server: HostPort = Field(
        description="Address of the primary DNS server, host:port (e.g. 192.0.2.53:53)."
    )
    zone: str = Field(
        description="The zone the _acme-challenge records are added to, e.g. example.com."
    )
    key_name: str | None = Field(
        None, description="TSIG key name; unset sends unsigned updates (not recommended)."
    )
    key_secret: str | None = Field(
        None,
        description="TSIG secret, base64 (use ${VAR} to take it from the environment).",
    )
    key_algorithm: TsigAlgorithm = Field(
        TsigAlgorithm.HMAC_SHA256,
        description="TSIG algorithm: hmac-sha256, hmac-sha384 or hmac-sha512.",
    )
    ttl: int = Field(60, ge=1, description="TTL in seconds of the TXT records added.")


class DnsChallengeSettings(StrictModel):
    """How DNS-01 TXT records are published: exactly one of command, webhook, rfc2136."""

    command: list[str] | None = Field(
        None,
        description=(
            "A program and its arguments, run without a shell as COMMAND... present|cleanup "
            "FQDN VALUE, e.g. [/usr/local/bin/dns-hook]. FQDN is _acme-challenge.NAME. with a "
            "trailing dot. It also gets FLM_ACME_ACTION, FLM_ACME_FQDN, FLM_ACME_DOMAIN and "
            "FLM_ACME_VALUE in its environment. Exit status 0 means done."
        ),
    )
    webhook: DnsWebhookSettings | None = Field(
        None, description="An HTTP endpoint that publishes the record."
    )
    rfc2136: Rfc2136Settings | None = Field(
        None, description="A DNS server updated with RFC 2136 dynamic updates."
    )
    timeout: Duration = Field(60.0, description="Time the command, webhook or DNS update may take.")
    propagation_delay: Duration = Field(
        10.0,
        description=(
            "Time to wait after publishing before asking the CA to validate, so that every "
            "authoritative server has the record."
        ),
    )

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("the command needs at least a program name")
        return value


class AcmeEabSettings(StrictModel):
    """External account binding: ties the ACME account to an account at the CA."""

    key_id: str = Field(
        ..., min_length=1, description="The EAB key id (KID) the CA gave you for this account."
    )
    hmac_key: SecretStr = Field(
        ...,
        description=(
            "The EAB HMAC key the CA gave you (base64url, as shown by ZeroSSL, Google Trust "
            "Services, Sectigo, ...). A secret: write ${VAR}. Used once, when the account "
            "is created."
        ),
    )

    @field_validator("hmac_key")
    @classmethod
    def _check_hmac_key(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        try:
            decoded = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("hmac_key is not base64url") from None
        if not decoded:
            raise ValueError("hmac_key is empty")
        return value


class AcmeSettings(StrictModel):
    """Where and how `https-acme` listeners get their certificates."""

    directory: str = Field(
        LETS_ENCRYPT_DIRECTORY,
        description="The ACME directory URL of the CA (default: Let's Encrypt production).",
    )
    ca_bundle: Path | None = Field(
        None,
        description=(
            "PEM file of CA certificates trusted for the ACME server's own HTTPS (for a private "
            "CA such as pebble or step-ca); default: the system trust store. A relative path is "
            "relative to flm.yaml."
        ),
    )
    email: str | None = Field(
        None, description="Contact address registered with the ACME account (expiry notices)."
    )
    accept_terms: bool = Field(
        True,
        description=(
            "Agree to the CA's terms of service when the account is created (required by most CAs)."
        ),
    )
    challenge: AcmeChallenge = Field(
        AcmeChallenge.HTTP_01,
        description=(
            "http-01: the gateway answers the CA on http_port. dns-01: a TXT record is "
            "published through dns: (needed for wildcard names)."
        ),
    )
    http_port: int = Field(
        80,
        ge=1,
        le=65535,
        description=(
            "Port of the HTTP-01 responder, bound on the listener's host. The CA always "
            "connects to port 80, so anything else needs a port forward (or a test CA)."
        ),
    )
    dns: DnsChallengeSettings | None = Field(
        None, description="How DNS-01 records are published (required with challenge: dns-01)."
    )
    eab: AcmeEabSettings | None = Field(
        None,
        description=(
            "External account binding, for CAs that require one (ZeroSSL, Google Trust "
            "Services, most commercial CAs); Let's Encrypt needs none."
        ),
    )
    key_type: AcmeKeyType = Field(
        AcmeKeyType.EC256,
        description="Key type of the certificate: ec256, ec384, rsa2048 or rsa4096.",
    )
    renew_before: float = Field(
        1 / 3,
        gt=0,
        lt=1,
        description=(
            "Renew when this fraction of the certificate's lifetime is left (default 1/3: "
            "a 90-day certificate is renewed 30 days before it expires)."
        ),
    )
    retry_initial: Duration = Field(
        60.0, description="Wait after a failed order before the first retry; doubles per failure."
    )
    retry_max: Duration = Field(
        6 * 3600.0, description="Longest wait between two attempts after failures."
    )
    timeout: Duration = Field(30.0, description="Timeout of one HTTP request to the ACME server.")
    validation_timeout: Duration = Field(
        90.0, description="Time the CA may take to validate the challenges and issue."
    )

    @field_validator("directory")
    @classmethod
    def _check_directory(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{value!r} is not an https:// URL (ACME requires HTTPS)")
        return value

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        if value is not None:
            local, at, domain = value.partition("@")
            if not at or not local or "." not in domain or any(c.isspace() for c in value):
                raise ValueError(f"{value!r} is not an e-mail address")
        return value


class HstsSettings(StrictModel):
    """The Strict-Transport-Security header added to every response of a TLS listener."""

    max_age: Duration = Field(
        365 * 86400.0,
        description="How long browsers must use HTTPS only (default 365d).",
    )
    include_subdomains: bool = Field(False, description="Add includeSubDomains.")
    preload: bool = Field(False, description="Add preload (only if you submit the domain).")


class RedirectHttpSettings(StrictModel):
    """A plain-HTTP listener that answers every request with a redirect to the HTTPS listener."""

    bind: HostPort | None = Field(
        None,
        description=(
            "Address of the redirect listener, host:port. Default: the listener's host on "
            "port 80, or on acme.http_port for an http-01 listener (the same server then "
            "answers ACME challenges and redirects everything else)."
        ),
    )
    status: int = Field(
        308,
        description="301, 302, 307 or 308 (default, keeps the method and body).",
    )

    @field_validator("status")
    @classmethod
    def _check_status(cls, value: int) -> int:
        if value not in (301, 302, 307, 308):
            raise ValueError(f"{value} is not a redirect status; use 301, 302, 307 or 308")
        return value


class TlsSettings(StrictModel):
    """How a listener speaks TLS; `local-http` is plain HTTP for loopback use."""

    mode: TlsMode = Field(
        TlsMode.LOCAL_HTTP,
        description="local-http (plain HTTP), dev-selfsigned, https-acme or packaged-ca.",
    )
    hostnames: list[str] = Field(
        default_factory=list,
        description=(
            "Names the certificate must cover (dev-selfsigned, packaged-ca), besides localhost "
            "and the listener's IP addresses. packaged-ca also accepts *.name entries."
        ),
    )
    domains: list[str] = Field(
        default_factory=list,
        description=(
            "https-acme: the names requested from the CA (one certificate for all of them); "
            "*.name wildcards need challenge: dns-01."
        ),
    )
    acme: AcmeSettings | None = Field(
        None,
        description="https-acme: the CA and challenge settings (defaults: Let's Encrypt, http-01).",
    )
    min_version: TlsVersion = Field(
        TlsVersion.TLS1_2,
        description="Oldest TLS version accepted from clients: TLS1.2 or TLS1.3.",
    )
    hsts: HstsSettings | None = Field(
        None,
        description="Send Strict-Transport-Security on every response (off by default).",
    )
    redirect_http: RedirectHttpSettings | None = Field(
        None,
        description=(
            "Also run a plain-HTTP listener that redirects to this HTTPS listener (off by default)."
        ),
    )

    @field_validator("hostnames", "domains")
    @classmethod
    def _lowercase_names(cls, value: list[str]) -> list[str]:
        return [name.strip().lower().rstrip(".") for name in value]
