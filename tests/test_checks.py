from __future__ import annotations

import socket
from pathlib import Path

import pytest

from flm_gateway.checks import Level, check_bind, check_engines, check_state, run_checks
from flm_gateway.config import parse_config
from flm_gateway.config.engines import EngineConfig
from flm_gateway.config.loader import LoadedConfig
from flm_gateway.egress.sessions import direct_session
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.httpio.client import HttpSession
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import free_port


def session(config: EngineConfig) -> HttpSession:
    return direct_session()


def directory(loaded: LoadedConfig) -> EngineDirectory:
    return EngineDirectory(loaded.config.engines, session)


def loaded(text: str, state_dir: Path) -> LoadedConfig:
    config, _ = parse_config(text, environ={})
    return LoadedConfig(config=config, path=None, state_dir=state_dir, source=text)


def test_bind_free_taken_and_unavailable() -> None:
    port = free_port()
    assert check_bind("listener", "main", ("127.0.0.1", port), "x", None).level is Level.OK
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = check_bind("listener", "main", taken.getsockname(), "listeners[0].bind", None)
    assert result.level is Level.FAIL
    assert "in use by another process" in result.message
    assert result.line().endswith(
        "-> stop that process or choose another port for listeners[0].bind"
    )
    result = check_bind("admin", "listener", ("192.0.2.1", port), "admin.bind", None)
    assert result.level is Level.FAIL and "no network interface" in result.message


def test_state_directory(tmp_path: Path) -> None:
    text = f'listeners: [{{name: main, bind: "127.0.0.1:{free_port()}"}}]\n'
    [ok] = check_state(loaded(text, tmp_path / "state"))
    assert ok.level is Level.OK and ok.subject == f"sqlite {tmp_path / 'state' / 'state.db'}"
    blocker = tmp_path / "file"
    blocker.write_text("")
    [failed] = check_state(loaded(text, blocker / "state"))
    assert failed.level is Level.FAIL and "server.state_dir" in failed.fix


def test_unreachable_redis_is_a_problem(tmp_path: Path) -> None:
    text = (
        f'listeners: [{{name: main, bind: "127.0.0.1:{free_port()}"}}]\n'
        f'state: {{backend: redis, redis_url: "redis://127.0.0.1:{free_port()}/0"}}\n'
    )
    [failed] = check_state(loaded(text, tmp_path / "state"))
    assert failed.level is Level.FAIL and "state.redis_url" in failed.fix


async def test_engines_up_and_down(tmp_path: Path) -> None:
    async with FakeEngine("vllm", ["tiny-a"]) as engine:
        text = f"""
listeners: [{{name: main, bind: "127.0.0.1:{free_port()}"}}]
engines:
  - {{name: up, kind: vllm, url: "{engine.url}"}}
  - {{name: gone, url: "http://127.0.0.1:{free_port()}"}}
admin: {{enabled: false}}
"""
        results = await run_checks(loaded(text, tmp_path), directory, 5.0)
    by_subject = {(r.area, r.subject): r for r in results}
    assert by_subject[("engine", "up")].level is Level.OK
    assert "1 model(s)" in by_subject[("engine", "up")].message
    gone = by_subject[("engine", "gone")]
    assert gone.level is Level.FAIL and gone.fix == "start the engine, or correct engines[1].url"
    assert by_subject[("config", "<built-in default>")].level is Level.OK
    assert by_subject[("listener", "main")].level is Level.OK
    assert ("admin", "listener") not in by_subject


async def test_no_engine_is_a_problem(tmp_path: Path) -> None:
    text = f'listeners: [{{name: main, bind: "127.0.0.1:{free_port()}"}}]\n'
    [result] = await check_engines(loaded(text, tmp_path), directory, 1.0)
    assert result.level is Level.FAIL


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listeners: [{name: a, bind: "127.0.0.1:9090"}]\n', "collides with listeners[0]"),
        (
            'listeners: [{name: a, bind: "127.0.0.1:8088"}]\nadmin: {bind: "0.0.0.0:9100"}\n',
            "admin.allow_remote: true",
        ),
    ],
)
def test_admin_config_rules(text: str, message: str) -> None:
    from flm_gateway.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_config(text, environ={})


def test_admin_may_be_remote_when_said_so() -> None:
    text = (
        'listeners: [{name: a, bind: "127.0.0.1:8088"}]\n'
        'admin: {bind: "0.0.0.0:9100", allow_remote: true}\n'
    )
    config, _ = parse_config(text, environ={})
    assert config.admin.bind == ("0.0.0.0", 9100)


def test_certificates_expired_soon_and_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime

    from flm_gateway import checks
    from flm_gateway.tls.base import CertificateStatus

    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    statuses = [
        CertificateStatus("old", "https-acme", "CN=a", None, when, -2.0),
        CertificateStatus("soon", "packaged-ca", "CN=b", None, when, 5.0),
        CertificateStatus("fine", "dev-selfsigned", "CN=c", None, when, 200.0),
        CertificateStatus("new", "https-acme", note="not issued yet"),
    ]
    monkeypatch.setattr(checks, "certificate_statuses", lambda loaded: statuses)
    text = f'listeners: [{{name: main, bind: "127.0.0.1:{free_port()}"}}]\n'
    levels = [r.level for r in checks.check_certificates(loaded(text, tmp_path))]
    assert levels == [Level.FAIL, Level.WARN, Level.OK, Level.OK]
