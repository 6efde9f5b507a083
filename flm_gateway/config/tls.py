"""The `tls:` block of a listener: which TLS mode serves it and the mode's settings."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from flm_gateway.config.types import StrictModel


class TlsMode(StrEnum):
    LOCAL_HTTP = "local-http"
    DEV_SELFSIGNED = "dev-selfsigned"
    HTTPS_ACME = "https-acme"
    PACKAGED_CA = "packaged-ca"


class TlsSettings(StrictModel):
    """How a listener speaks TLS; `local-http` is plain HTTP for loopback use."""

    mode: TlsMode = Field(
        TlsMode.LOCAL_HTTP,
        description="local-http (plain HTTP), dev-selfsigned, https-acme or packaged-ca.",
    )
    hostnames: list[str] = Field(
        default_factory=list,
        description="Names the certificate must cover (dev-selfsigned, packaged-ca).",
    )
