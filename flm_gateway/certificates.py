"""Certificate status per TLS listener, for `flm-gateway check` and the expiry metric.

`certificate_statuses(loaded)` is the one place `check` and `/metrics` ask; it
reads what each TLS mode serves (`flm_gateway.tls.describe_certificates`:
subject, issuer, expiry and days left, or a note such as "not issued yet")
and leaves out `local-http` listeners, which serve no certificate. Anything
with the attributes of `CertificateInfo` can be returned, which keeps `check`
and the metrics independent of the TLS package's types.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Protocol

from flm_gateway.config import LoadedConfig
from flm_gateway.config.tls import TlsMode
from flm_gateway.tls import describe_certificates

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


def certificate_statuses(loaded: LoadedConfig) -> Sequence[CertificateInfo]:
    """The certificate of every listener that serves TLS, or why it is unknown."""
    return [
        status
        for status in describe_certificates(loaded)
        if status.mode != TlsMode.LOCAL_HTTP.value
    ]
