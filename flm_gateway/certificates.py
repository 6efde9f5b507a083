"""Certificate status per listener, for `flm-gateway check` and the expiry metric.

`certificate_statuses(loaded)` is the one place `check` and `/metrics` ask.
The TLS modes (`flm_gateway.tls`) know the certificates; until their
`describe_certificates(loaded)` is wired in here, a listener's status says
plainly that it is unknown, and `check` reports that as a note, not a failure.
Anything with the attributes of `CertificateInfo` (such as the TLS package's
`CertificateStatus`) can be returned.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from flm_gateway.config import LoadedConfig
from flm_gateway.config.tls import TlsMode

EXPIRY_WARNING_DAYS = 14.0
"""`check` warns when a certificate has fewer days left than this."""


class CertificateInfo(Protocol):
    """What check and metrics need to know about one listener's certificate."""

    @property
    def listener(self) -> str: ...

    @property
    def mode(self) -> str: ...

    @property
    def subject(self) -> str | None: ...

    @property
    def not_after(self) -> datetime.datetime | None: ...

    @property
    def days_left(self) -> float | None: ...

    @property
    def note(self) -> str: ...


@dataclass(frozen=True)
class CertificateReport:
    """A `CertificateInfo` made here when the TLS package cannot tell more."""

    listener: str
    mode: str
    subject: str | None = None
    not_after: datetime.datetime | None = None
    days_left: float | None = None
    note: str = ""


def certificate_statuses(loaded: LoadedConfig) -> Sequence[CertificateInfo]:
    """The certificate of every listener that serves TLS, or why it is unknown."""
    reports: list[CertificateInfo] = []
    for listener in loaded.config.listeners:
        mode = listener.tls.mode
        if mode is TlsMode.LOCAL_HTTP:
            continue
        reports.append(
            CertificateReport(
                listener=listener.name,
                mode=mode.value,
                note="certificate status is not available from this build",
            )
        )
    return reports
