"""honeypot: decoy paths answered plausibly, never routed, recorded as offences."""

from __future__ import annotations

from pathlib import Path

import pytest

from flm_gateway.addons.honeypot import Honeypot
from flm_gateway.proxy.flow_meta import API_KIND
from flm_gateway.security.events import events_of
from tests.support.flows import configure
from tests.support.security import flow, loaded, run_hooks


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/.env", "DB_PASSWORD"),
        ("/%2e%65nv", "DB_PASSWORD"),
        ("//.ENV", "DB_PASSWORD"),
        ("/laravel/.env", "DB_PASSWORD"),
        ("/.git/config", "[core]"),
        ("/wp-admin/install.php", "Log In"),
        ("/phpmyadmin/", "phpMyAdmin"),
    ],
)
async def test_default_decoys(tmp_path: Path, path: str, expected: str) -> None:
    config = loaded("", tmp_path)
    addon = Honeypot()
    configure(config, addon)
    target = flow(config, path=path)
    await run_hooks([addon], target, ("requestheaders",))
    assert target.response is not None and target.response.status_code == 200
    assert expected in target.response.text
    assert API_KIND.require(target) == "honeypot"
    (event,) = events_of(target)
    assert (event.type, event.offence) == ("honeypot.hit", "honeypot")


async def test_configured_list_replaces_defaults_and_api_is_untouched(tmp_path: Path) -> None:
    config = loaded('honeypots: ["/.env", "/wp-admin"]', tmp_path)
    addon = Honeypot()
    configure(config, addon)
    for path, decoy in (
        ("/.env", True),
        ("/phpmyadmin", False),
        ("/v1/models", False),
        ("/healthz", False),
        ("/.envelope", False),
    ):
        target = flow(config, path=path)
        await run_hooks([addon], target, ("requestheaders",))
        assert (target.response is not None) is decoy, path
