"""Certificate status per TLS listener, for `flm-gateway check` and the expiry metric.

`certificate_statuses(loaded)` is what `check` asks: it reads each TLS mode's
files on disk (`flm_gateway.tls.describe_certificates`: subject, issuer, expiry
and days left, or a note such as "not issued yet"); for `packaged-ca` that is
the root, as leaves live in the running gateway's memory only. `/metrics` asks
the running gateway's TLS addon instead (`served_statuses`), so its expiry is
the one of the certificate clients receive: for `packaged-ca` the listener's
default leaf (90 days), not the root (ten years). Both leave out `local-http`
listeners, which serve no certificate. Anything
with the attributes of `CertificateInfo` can be returned, which keeps `check`
and the metrics independent of the TLS package's types.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Protocol

from flm_gateway.config import LoadedConfig
from flm_gateway.config.tls_settings import TlsMode
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
    """The certificate on disk of every listener that serves TLS, or why it is unknown."""
    return served_statuses(describe_certificates(loaded))


def served_statuses(statuses: Iterable[CertificateInfo]) -> Sequence[CertificateInfo]:
    """`statuses` without the listeners that serve no certificate (`local-http`)."""
    return [status for status in statuses if status.mode != TlsMode.LOCAL_HTTP.value]
