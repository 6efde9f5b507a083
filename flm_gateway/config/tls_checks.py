"""Cross-field rules of the listeners' `tls:` blocks that the schema cannot express.

`check_tls(config)` yields (path, message) pairs like `semantic.check_semantics`;
it is called from there. Rules: every setting is used by the mode it is given
with (no silently ignored keys), names are valid DNS names, wildcards need
DNS-01, DNS-01 names exactly one publisher, and the extra plain-HTTP ports
(ACME HTTP-01 responders, HTTP->HTTPS redirects) collide with no listener.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterator

from flm_gateway.config.binds import binds_overlap
from flm_gateway.config.model import GatewayConfig
from flm_gateway.config.tls_settings import AcmeChallenge, AcmeSettings, TlsMode, TlsSettings
from flm_gateway.config.types import format_host_port

Problem = tuple[tuple[str | int, ...], str]
Address = tuple[str, int]

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def check_tls(config: GatewayConfig) -> list[Problem]:
    """Every TLS problem in `config`, in listener order."""
    problems: list[Problem] = []
    for index, listener in enumerate(config.listeners):
        problems += _mode_settings(("listeners", index, "tls"), listener.tls)
    problems += _http_ports(config)
    return problems


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def dns_name_problem(name: str, *, allow_wildcard: bool) -> str | None:
    """Why `name` is not a valid DNS name (None when it is)."""
    labels = name.split(".")
    if labels[0] == "*":
        if not allow_wildcard:
            return f"{name!r}: a wildcard is not allowed here"
        labels = labels[1:]
        if len(labels) < 2:
            return f"{name!r}: a wildcard needs at least two labels after '*.'"
    if not name or len(name) > 253 or not labels:
        return f"{name!r} is not a DNS name"
    for label in labels:
        if not _LABEL_RE.match(label):
            return (
                f"{name!r} is not a DNS name (labels are letters, digits and '-', and '*' "
                "only as the whole first label)"
            )
    return None


def _mode_settings(path: tuple[str | int, ...], tls: TlsSettings) -> Iterator[Problem]:
    mode = tls.mode
    given = tls.model_fields_set
    if mode != TlsMode.HTTPS_ACME:
        if tls.domains:
            yield (*path, "domains"), f"only used with mode: https-acme (this is {mode})"
        if tls.acme is not None:
            yield (*path, "acme"), f"only used with mode: https-acme (this is {mode})"
    if mode == TlsMode.LOCAL_HTTP:
        defaults = TlsSettings()
        for key in ("hostnames", "hsts", "redirect_http", "min_version"):
            if key in given and getattr(tls, key) != getattr(defaults, key):
                yield (*path, key), "has no effect with mode: local-http (plain HTTP)"
        return
    if mode == TlsMode.HTTPS_ACME:
        yield from _acme_settings(path, tls)
        return
    for position, name in enumerate(tls.hostnames):
        if is_ip_address(name):
            continue
        allow_wildcard = mode == TlsMode.PACKAGED_CA
        if problem := dns_name_problem(name, allow_wildcard=allow_wildcard):
            yield (*path, "hostnames", position), problem


def _acme_settings(path: tuple[str | int, ...], tls: TlsSettings) -> Iterator[Problem]:
    acme = tls.acme or AcmeSettings()
    if tls.hostnames:
        yield (*path, "hostnames"), "https-acme takes its names from domains:, not hostnames:"
    if not tls.domains:
        yield (*path, "domains"), "https-acme needs at least one domain name to request"
    for position, name in enumerate(tls.domains):
        if is_ip_address(name):
            yield (*path, "domains", position), f"{name!r}: IP addresses are not supported here"
            continue
        if problem := dns_name_problem(name, allow_wildcard=True):
            yield (*path, "domains", position), problem
        elif name.startswith("*.") and acme.challenge != AcmeChallenge.DNS_01:
            yield (
                (*path, "domains", position),
                f"{name!r}: wildcard names can only be validated with challenge: dns-01",
            )
    acme_path = (*path, "acme")
    if acme.challenge == AcmeChallenge.DNS_01:
        if acme.dns is None:
            yield (
                (*acme_path, "challenge"),
                ("dns-01 needs acme.dns: with one of command, webhook or rfc2136"),
            )
        else:
            chosen = [k for k in ("command", "webhook", "rfc2136") if getattr(acme.dns, k)]
            if len(chosen) != 1:
                yield (
                    (*acme_path, "dns"),
                    (
                        "set exactly one of command, webhook or rfc2136"
                        + (f" (found {', '.join(chosen)})" if chosen else "")
                    ),
                )
            rfc = acme.dns.rfc2136
            if rfc is not None:
                yield from _rfc2136((*acme_path, "dns", "rfc2136"), rfc.key_name, rfc.key_secret)
    elif acme.dns is not None:
        yield (*acme_path, "dns"), "only used with challenge: dns-01"
    if "http_port" in acme.model_fields_set and acme.challenge != AcmeChallenge.HTTP_01:
        yield (*acme_path, "http_port"), "only used with challenge: http-01"


def _rfc2136(
    path: tuple[str | int, ...], key_name: str | None, key_secret: str | None
) -> Iterator[Problem]:
    if (key_name is None) != (key_secret is None):
        yield path, "set both key_name and key_secret for TSIG, or neither"
    if key_secret is not None:
        try:
            base64.b64decode(key_secret, validate=True)
        except (binascii.Error, ValueError):
            yield (*path, "key_secret"), "is not base64 (the secret itself is not shown)"


def acme_http_address(bind: Address, acme: AcmeSettings) -> Address:
    """Where the HTTP-01 responder of a listener bound at `bind` listens."""
    return (bind[0], acme.http_port)


def redirect_address(bind: Address, tls: TlsSettings) -> Address | None:
    """Where the HTTP->HTTPS redirect of a listener listens (None: no redirect)."""
    if tls.redirect_http is None:
        return None
    if tls.redirect_http.bind is not None:
        return tls.redirect_http.bind
    acme = tls.acme or AcmeSettings()
    if tls.mode == TlsMode.HTTPS_ACME and acme.challenge == AcmeChallenge.HTTP_01:
        return acme_http_address(bind, acme)
    return (bind[0], 80)


def _http_ports(config: GatewayConfig) -> Iterator[Problem]:
    """The extra plain-HTTP servers must not take a listener's address or each other's."""
    servers: list[tuple[Address, tuple[str | int, ...], str]] = []
    for index, listener in enumerate(config.listeners):
        tls = listener.tls
        path: tuple[str | int, ...] = ("listeners", index, "tls")
        if tls.mode == TlsMode.HTTPS_ACME:
            acme = tls.acme or AcmeSettings()
            if acme.challenge == AcmeChallenge.HTTP_01:
                address = acme_http_address(listener.bind, acme)
                servers.append((address, (*path, "acme", "http_port"), "acme"))
        if tls.mode != TlsMode.LOCAL_HTTP and (target := redirect_address(listener.bind, tls)):
            servers.append((target, (*path, "redirect_http"), "redirect"))
    for address, path, _kind in servers:
        for index, listener in enumerate(config.listeners):
            if binds_overlap(address, listener.bind):
                yield (
                    path,
                    (
                        f"{format_host_port(address)} is also the address of listeners[{index}] "
                        f"({listener.name})"
                    ),
                )
    redirects: dict[Address, tuple[str | int, ...]] = {}
    for address, path, kind in servers:
        if kind != "redirect":
            continue
        for other, other_path in redirects.items():
            if binds_overlap(address, other):
                yield (
                    path,
                    (
                        f"{format_host_port(address)} already redirects for "
                        f"{_render(other_path[:2])}; one redirect per address"
                    ),
                )
        redirects.setdefault(address, path)


def _render(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
