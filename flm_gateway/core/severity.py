"""How severe a security event is: one scale for the config, the policies and the audit log."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 (info) to 4 (critical), for "at least this severe" comparisons."""
        return list(Severity).index(self)
