"""Why an egress failed, and how that failure reaches the client.

Every failure to reach an engine through an egress profile is an
`EgressFailure`: the profile, its mode, a `Reason` and a detail for the log.
Clients get the profile name and the reason in OpenAI's error shape, with
the status the reason implies (503 when the egress itself is down, 502 when
it answered badly or the target refused, 504 on timeout); proxy addresses,
targets and credentials stay in the log.

Inside the gateway the failure travels as text: the CONNECT bridge answers
mitmproxy with a status line whose reason phrase is `marker()`, and mitmproxy
turns it into the flow's error message ("Upstream proxy ... refused HTTP
CONNECT request: 503 flm-egress profile=... mode=... reason=..."). The
client-facing renderer calls `failure_from_message` on a protocol error's
message to build the OpenAI response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from mitmproxy import http

from flm_gateway.core.errors import error_response

MARKER = "flm-egress"
_MARKER_RE = re.compile(
    rf"{MARKER} profile=(?P<profile>[A-Za-z0-9_.-]+) mode=(?P<mode>\w+) reason=(?P<reason>\w+)"
)


class Reason(StrEnum):
    """What went wrong, from the client's point of view."""

    PROXY_UNREACHABLE = "proxy_unreachable"
    PROXY_AUTH_REJECTED = "proxy_auth_rejected"
    PROXY_ERROR = "proxy_error"
    TARGET_FORBIDDEN = "target_forbidden"
    TARGET_REFUSED = "target_refused"
    TARGET_UNREACHABLE = "target_unreachable"
    TOR_NOT_BOOTSTRAPPED = "tor_not_bootstrapped"
    TOR_CIRCUIT_FAILED = "tor_circuit_failed"
    TIMEOUT = "timeout"
    DIRECT_REFUSED = "direct_refused"
    EGRESS_UNAVAILABLE = "unavailable"


_STATUS = {
    Reason.PROXY_UNREACHABLE: 503,
    Reason.PROXY_AUTH_REJECTED: 502,
    Reason.PROXY_ERROR: 502,
    Reason.TARGET_FORBIDDEN: 502,
    Reason.TARGET_REFUSED: 502,
    Reason.TARGET_UNREACHABLE: 502,
    Reason.TOR_NOT_BOOTSTRAPPED: 503,
    Reason.TOR_CIRCUIT_FAILED: 503,
    Reason.TIMEOUT: 504,
    Reason.DIRECT_REFUSED: 502,
    Reason.EGRESS_UNAVAILABLE: 503,
}

_EXPLANATION = {
    Reason.PROXY_UNREACHABLE: "the proxy is unreachable",
    Reason.PROXY_AUTH_REJECTED: "the proxy rejected the gateway's credentials",
    Reason.PROXY_ERROR: "the proxy reported an error",
    Reason.TARGET_FORBIDDEN: "the proxy does not allow connections to the engine",
    Reason.TARGET_REFUSED: "the engine refused the connection",
    Reason.TARGET_UNREACHABLE: "the engine is unreachable",
    Reason.TOR_NOT_BOOTSTRAPPED: "Tor has not bootstrapped",
    Reason.TOR_CIRCUIT_FAILED: "Tor could not build a circuit to the engine",
    Reason.TIMEOUT: "the connection timed out",
    Reason.DIRECT_REFUSED: "a direct connection was refused (fail: closed)",
    Reason.EGRESS_UNAVAILABLE: "the egress is not available",
}


@dataclass(frozen=True)
class EgressFailure:
    """One failed attempt to reach a target through an egress profile."""

    profile: str
    mode: str
    reason: Reason
    detail: str = ""
    target: str = ""

    @property
    def proxied(self) -> bool:
        """False for a plain direct connection's failure, which is an engine failure."""
        return self.mode != "direct"

    @property
    def status(self) -> int:
        return _STATUS[self.reason]

    @property
    def code(self) -> str:
        return f"egress_{self.reason.value}"

    @property
    def client_message(self) -> str:
        """What the client reads: profile, mode and reason; no addresses."""
        return f"egress {self.profile!r} ({self.mode}) failed: {_EXPLANATION[self.reason]}"

    def log_message(self) -> str:
        """What the operator reads: everything but credentials."""
        where = f" to {self.target}" if self.target else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"egress {self.profile!r} ({self.mode}){where}: {self.reason.value}{detail}"

    def marker(self) -> str:
        """The machine-readable form carried through mitmproxy's error messages."""
        return f"{MARKER} profile={self.profile} mode={self.mode} reason={self.reason.value}"

    def response(self) -> http.Response:
        """The OpenAI-shaped error response for the client."""
        return error_response(self.status, self.client_message, code=self.code)


def failure_from_message(message: str) -> EgressFailure | None:
    """The failure encoded in a mitmproxy error message, or None if it is not an egress one."""
    match = _MARKER_RE.search(message)
    if match is None:
        return None
    try:
        reason = Reason(match.group("reason"))
    except ValueError:
        return None
    return EgressFailure(match.group("profile"), match.group("mode"), reason)


class EgressError(ConnectionError):
    """A connection through an egress profile failed; `failure` says which and why."""

    def __init__(self, failure: EgressFailure) -> None:
        super().__init__(failure.log_message())
        self.failure = failure
