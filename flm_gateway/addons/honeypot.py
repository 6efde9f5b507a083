"""Decoy endpoints: answer scanners plausibly, never forward them, and block the caller.

Policy (on `requestheaders`, before authentication so a scanner without a key
is caught): a request whose canonical path (`security.paths.canonical_path`:
decoded, case-folded, dot segments resolved) matches one of the listener's
`security.honeypots` paths (equal to it, below it, or ending with it, e.g.
`/app/.env`) is answered here with a plausible decoy (a fake `.env`, git config
or login page; every value in it is fake) and status 200. It never reaches an
engine. It records `honeypot.hit` (severity high, offence `honeypot`), which
`auto_block` turns into a block after `auto_block.honeypot_hits` hits
(default 1), except for `auto_block.never_block` addresses (loopback).
Health endpoints are never decoys. Writes `flm.api.kind` = `honeypot`.
"""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

from flm_gateway.core.paths import canonical_path, path_matches
from flm_gateway.core.severity import Severity
from flm_gateway.proxy.api_kind import ApiKind
from flm_gateway.proxy.fail_closed import fail_closed
from flm_gateway.proxy.flow_meta import API_KIND
from flm_gateway.proxy.runtime import Runtime
from flm_gateway.security.events import Offence, record
from flm_gateway.security.policies import is_health_check, listener_name, per_listener

_LOGIN_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><form method="post" action="{action}">
<h1>{title}</h1>
<label>Username <input name="log" type="text"></label>
<label>Password <input name="pwd" type="password"></label>
<button type="submit">Log In</button>
</form></body></html>
"""

_DECOYS: tuple[tuple[str, str, str], ...] = (
    (
        ".env",
        "text/plain",
        "APP_ENV=production\nAPP_KEY=base64:ZmFrZS1mYWtlLWZha2UtZmFrZS1mYWtlLWZha2U=\n"
        "DB_HOST=10.0.12.7\nDB_USERNAME=app\nDB_PASSWORD=Winter2019!\n"
        "OPENAI_API_KEY=sk-decoy-0000000000000000000000000000\n",
    ),
    (
        ".git/config",
        "text/plain",
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
        '[remote "origin"]\n\turl = git@git.internal:platform/app.git\n'
        "\tfetch = +refs/heads/*:refs/remotes/origin/*\n",
    ),
    (
        ".aws/credentials",
        "text/plain",
        "[default]\naws_access_key_id = AKIADECOY0000000000\n"
        "aws_secret_access_key = decoy/0000000000000000000000000000000000\n",
    ),
    ("wp-", "text/html", _LOGIN_PAGE.format(title="Log In", action="/wp-login.php")),
    ("phpmyadmin", "text/html", _LOGIN_PAGE.format(title="phpMyAdmin", action="/index.php")),
)
_DEFAULT_DECOY = ("text/html", _LOGIN_PAGE.format(title="Sign in", action="/login"))


def decoy_for(canonical: str) -> http.Response:
    """A plausible answer for a decoy path (first matching kind, else a login page)."""
    content_type, body = _DEFAULT_DECOY
    for marker, kind, text in _DECOYS:
        if marker in canonical:
            content_type, body = kind, text
            break
    return http.Response.make(
        200,
        body.encode(),
        {"content-type": f"{content_type}; charset=utf-8", "cache-control": "no-store"},
    )


class Honeypot:
    def __init__(self) -> None:
        self._paths: Mapping[str, tuple[str, ...]] = {}

    def prepare(self, runtime: Runtime) -> Mapping[str, tuple[str, ...]]:
        return {
            name: tuple(canonical_path(p) for p in security.honeypot_settings.paths)
            for name, security in per_listener(runtime.loaded.config).items()
        }

    def commit(self, prepared: Mapping[str, tuple[str, ...]]) -> None:
        self._paths = prepared

    def match(self, listener: str | None, path: str) -> str | None:
        """The honeypot path `path` hits on `listener`, or None."""
        canonical = canonical_path(path)
        for pattern in self._paths.get(listener or "", ()):
            if path_matches(canonical, pattern):
                return pattern
        return None

    @fail_closed()
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or is_health_check(flow):
            return
        hit = self.match(listener_name(flow), flow.request.path)
        if hit is None:
            return
        API_KIND.set(flow, ApiKind.HONEYPOT)
        record(
            flow,
            "honeypot.hit",
            Severity.HIGH,
            Offence.HONEYPOT,
            honeypot=hit,
            method=flow.request.method,
            path=flow.request.path.split("?", 1)[0][:200],
        )
        flow.response = decoy_for(canonical_path(flow.request.path))
