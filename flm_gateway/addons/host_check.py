"""Host check: a listener answers only requests that name it (the DNS-rebinding defence).

A page on `http://rebind.attacker.example:8088` whose name the attacker re-points
at 127.0.0.1 makes the victim's browser talk to a loopback listener as if it
were the attacker's own origin, so the browser lets the page read the answers.
The browser still sends `Host: rebind.attacker.example:8088`; refusing that name
is the defence (what Ollama's, Vite's and Jupyter's servers do).

Policy (on `requestheaders`, every listener, health paths included):
- The name a request gives is its absolute-form target's authority
  (`GET http://name/...`, RFC 9112 3.2.2), else its Host header.
- A listener accepts: `localhost`; its bind address (each address `localhost`
  binds; on a wildcard bind, `0.0.0.0` or `[::]`, every IP address, since it
  cannot know which of the machine's or a NAT's addresses clients use: IP
  literals cannot be rebound); its TLS names (`tls.hostnames`, `tls.domains`);
  and its `hosts:` (exact, `*.domain` for any subdomain, `*` for any Host).
  Names compare case-insensitively and without one trailing dot; the port is
  not compared (port forwards and containers change it; it names no host).
- 421 `misdirected_request`: a well-formed name the listener does not accept.
- 400 `invalid_host`: HTTP/1.1 without Host, more than one Host, or a value
  that is not `host[:port]` as a browser writes it (`hostnames.parse_authority`);
  400 `host_mismatch`: an absolute-form target whose authority is not the Host.
  HTTP/1.0 without Host names nothing and passes (HAProxy's default health
  check sends that; browsers never do).
Fails closed (an exception answers 500). mitmproxy runs with
`keep_host_header`, so the client's own Host is what this addon reads;
`upstream.point_at` gives the engine its own Host.
Reads `flm.listener`; writes `flm.host` (the `Authority` the client named, or
None when it named none or only `hosts: ["*"]` let it in) and, on refusal,
`flm.security.rejected` = `host`.
"""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

from flm_gateway.config.listener_settings import ListenerConfig
from flm_gateway.core.errors import error_response
from flm_gateway.core.hostnames import Authority, parse_authority
from flm_gateway.core.text import echo
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import HOST, LISTENER, SECURITY_REJECTED
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.host_policy import HostPolicy


def policy_for(listener: ListenerConfig) -> HostPolicy:
    """The Host values `listener` answers to: its bind, TLS names and `hosts:`."""
    return HostPolicy.for_bind(
        listener.bind, [*listener.hosts, *listener.tls.hostnames, *listener.tls.domains]
    )


def _is_host(name: bytes) -> bool:
    return len(name) == 4 and name.lower() == b"host"


class BadHost(Exception):
    """The request names its host in a way two parsers could read differently (400)."""

    def __init__(self, message: str, code: str = "invalid_host") -> None:
        super().__init__(message)
        self.code = code


def named_authority(
    request: http.Request, hosts: list[bytes], default_port: int
) -> Authority | None:
    """The authority a request with Host values `hosts` names (None: HTTP/1.0 without
    Host). Raises BadHost."""
    if len(hosts) > 1:
        raise BadHost("The request has more than one Host header.")
    host = parse_authority(hosts[0].decode("latin-1")) if hosts else None
    if hosts and host is None:
        raise BadHost("The Host header is not host[:port].")
    target = request.data.authority
    if target and request.first_line_format == "absolute":
        named = parse_authority(target.decode("latin-1"))
        if named is None:
            raise BadHost("The request target's host is not host[:port].")
        if host is not None and (host.host, host.port or default_port) != (
            named.host,
            named.port or default_port,
        ):
            raise BadHost(
                "The request target and the Host header name different hosts.", "host_mismatch"
            )
        return named
    if host is None and request.http_version != "HTTP/1.0":
        raise BadHost("An HTTP/1.1 request must name its host (Host header).")
    return host


class HostCheck:
    def __init__(self) -> None:
        self._policies: Mapping[str, HostPolicy] = {}

    def prepare(self, runtime: Runtime) -> Mapping[str, HostPolicy]:
        return {listener.name: policy_for(listener) for listener in runtime.loaded.config.listeners}

    def commit(self, prepared: Mapping[str, HostPolicy]) -> None:
        self._policies = prepared

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        listener = LISTENER.get(flow)
        if flow.response is not None or listener is None:
            return
        request = flow.request
        policy = self._policies[listener.name]
        hosts = [value for name, value in request.headers.fields if _is_host(name)]
        if len(hosts) == 1 and not request.data.authority:
            usual = policy.usual.get(hosts[0])
            if usual is not None:
                HOST.set(flow, usual)
                return
        try:
            named = named_authority(request, hosts, 443 if flow.client_conn.tls_established else 80)
        except BadHost as problem:
            flow.response = error_response(400, str(problem), code=problem.code)
            SECURITY_REJECTED.set(flow, "host")
            return
        if named is not None and not policy.accepts(named):
            flow.response = error_response(
                421,
                f"This listener does not serve the host {echo(named.host)!r}; use its address, "
                "or add the name to the listener's hosts: in flm.yaml.",
                code="misdirected_request",
            )
            SECURITY_REJECTED.set(flow, "host")
            return
        # A name only `hosts: ["*"]` let in names nothing: no same-origin pass for it in cors.
        HOST.set(flow, named if named is None or policy.names(named) else None)
