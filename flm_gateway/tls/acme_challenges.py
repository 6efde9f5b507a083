"""The plain-HTTP side server: ACME HTTP-01 answers and HTTP->HTTPS redirects.

One `HttpSideServer` (`httpio.server`) runs per address that needs one: the
`acme.http_port` of http-01 listeners and the `redirect_http` address of any
TLS listener (one server when both are the same address).

Policy, per request:
- `GET /.well-known/acme-challenge/<token>` answers the key authorization of a
  pending challenge (200, text/plain), or 404 for an unknown token.
- With a redirect target: any other request is answered with the configured
  redirect (308 by default) to `https://<host>[:port]<path>`, where <host> is
  the request's Host when the target listener serves that name, else the
  listener's first name (no open redirect to arbitrary hosts).
- Without one: 404. Nothing here is ever proxied to an engine.
- Malformed requests, heads over 16 KiB and bodies over 64 KiB get the HTTP
  server's own 400/431/413 (see `httpio.server`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

from flm_gateway.config.binds import listen_host
from flm_gateway.config.types import format_host_port
from flm_gateway.httpio.server import HttpServer, Request, Response
from flm_gateway.tls.pki import name_matches

logger = logging.getLogger(__name__)

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


@dataclass(frozen=True)
class RedirectTarget:
    """Where plain-HTTP requests are sent: the HTTPS listener's port and names."""

    https_port: int
    names: tuple[str, ...]
    status: int = 308


def redirect_location(host_header: str | None, path_qs: str, target: RedirectTarget) -> str | None:
    """The Location for a request, or None when no safe host is known."""
    host = _strip_port(host_header or "").lower().rstrip(".")
    if not host or not _host_allowed(host, target.names):
        host = next((n for n in target.names if not n.startswith("*.")), "")
        if not host:
            return None
    if ":" in host:
        host = f"[{host}]"
    port = "" if target.https_port == 443 else f":{target.https_port}"
    path = path_qs if path_qs.startswith("/") else "/"
    return f"https://{host}{port}{path}"


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _host_allowed(host: str, names: tuple[str, ...]) -> bool:
    if any(name_matches(name, host) for name in names):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ChallengeTokens:
    """Pending HTTP-01 answers (token -> key authorization) for one address."""

    def __init__(self) -> None:
        self._answers: dict[str, str] = {}

    def add(self, token: str, key_authorization: str) -> None:
        self._answers[token] = key_authorization

    def remove(self, token: str) -> None:
        self._answers.pop(token, None)

    def get(self, token: str) -> str | None:
        return self._answers.get(token)

    def __len__(self) -> int:
        return len(self._answers)


class HttpSideServer:
    """One HTTP server on one address; `tokens` and `redirect` may change while it runs."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.tokens = ChallengeTokens()
        self.redirect: RedirectTarget | None = None
        self._server: HttpServer | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def _handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith(CHALLENGE_PREFIX):
            answer = self.tokens.get(path[len(CHALLENGE_PREFIX) :])
            if answer is not None:
                logger.info(
                    "answered an ACME http-01 challenge on %s", format_host_port(self.address)
                )
                return Response.text(200, answer)
            if self.redirect is None:
                return Response.text(404, "unknown challenge token\n")
        if self.redirect is not None:
            # Without a Host header (HTTP/1.0), the address the request arrived on.
            host = request.host
            if host is None and request.local is not None:
                host = request.local[0]
            location = redirect_location(host, request.target, self.redirect)
            if location is not None:
                return Response.text(
                    self.redirect.status,
                    f"This endpoint is served over HTTPS: {location}\n",
                    (("Location", location), ("Cache-Control", "no-store")),
                )
            return Response.text(400, "unknown host; use HTTPS\n")
        return Response.text(404, "not found\n")

    async def start(self) -> None:
        """Bind the address; raises OSError when it cannot."""
        async with self._lock:
            if self._server is not None:
                return
            server = HttpServer(self._handle)
            try:
                await server.start(listen_host(self.address[0]), self.address[1])
            except BaseException:
                await server.close()
                raise
            self._server = server
            logger.info("plain-HTTP side server listening on %s", format_host_port(self.address))

    async def stop(self) -> None:
        async with self._lock:
            server, self._server = self._server, None
            if server is not None:
                await server.close()
