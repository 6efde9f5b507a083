"""DNS-01 publishers with real programs (/bin/sh scripts). Webhook and RFC 2136 run against
real servers in tests/integration/test_tls_dns01.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from flm_gateway.config.tls_settings import DnsChallengeSettings
from flm_gateway.tls.dns01 import CommandPublisher, DnsPublishError, make_publisher


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hook.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def test_command_gets_arguments_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    hook = script(tmp_path, f'echo "$1 $2 $3 $FLM_ACME_ACTION $FLM_ACME_DOMAIN" >> {out}\n')
    publisher = make_publisher(DnsChallengeSettings(command=[str(hook)]))
    await publisher.present("gw.test", "_acme-challenge.gw.test.", "abc")
    await publisher.cleanup("gw.test", "_acme-challenge.gw.test.", "abc")
    assert out.read_text().splitlines() == [
        "present _acme-challenge.gw.test. abc present gw.test",
        "cleanup _acme-challenge.gw.test. abc cleanup gw.test",
    ]


async def test_command_failures_are_clear(tmp_path: Path) -> None:
    failing = CommandPublisher([str(script(tmp_path, "echo zone locked; exit 4\n"))], 5)
    with pytest.raises(DnsPublishError, match="exited with status 4: zone locked"):
        await failing.present("gw.test", "_acme-challenge.gw.test.", "v")
    slow = CommandPublisher(["sh", "-c", "sleep 5", "hook"], 0.2)
    with pytest.raises(DnsPublishError, match=r"did not finish within 0.2s"):
        await slow.present("gw.test", "_acme-challenge.gw.test.", "v")
    missing = CommandPublisher([str(tmp_path / "nope")], 5)
    with pytest.raises(DnsPublishError, match="could not start"):
        await missing.present("gw.test", "_acme-challenge.gw.test.", "v")
