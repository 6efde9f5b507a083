from __future__ import annotations

import socket
from pathlib import Path

import pytest

from flm_gateway.app import preflight as checks
from flm_gateway.app.preflight import Level, check_bind, check_engines, check_state, run_checks
from flm_gateway.config import load_config, parse_config
from flm_gateway.config.engine_settings import EngineConfig
from flm_gateway.config.loader import LoadedConfig
from flm_gateway.egress.sessions import direct_session
from flm_gateway.engines.directory import EngineDirectory
from flm_gateway.httpio.http_client import HttpSession
from flm_gateway.state.store import KeyRecord, KeyScopes, KeySecret
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

    from flm_gateway.app import preflight as checks
    from flm_gateway.tls.mode import CertificateStatus

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


KEYED = """\
listeners:
  - {name: a, bind: "127.0.0.1:18611", auth: api-key}
  - {name: b, bind: "127.0.0.1:18612", auth: api-key}
  - {name: local, bind: "127.0.0.1:18613"}
"""


def _key(key_id: str, listeners: tuple[str, ...] = (), revoked: bool = False) -> KeyRecord:
    return KeyRecord(
        id=key_id,
        name=key_id,
        created_at=1.0,
        secrets=(KeySecret("sha256:" + "0" * 64, 1.0),),
        scopes=KeyScopes(listeners=listeners),
        revoked_at=2.0 if revoked else None,
    )


def _warned(stored: list[KeyRecord], tmp_path: Path, text: str = KEYED) -> list[str]:
    results = list(checks.check_keys(loaded(text, tmp_path), stored))
    assert results[-1].level is Level.OK and "API keys are required on: a, b" in results[-1].message
    return [r.subject for r in results if r.level is Level.WARN]


def test_a_keyed_listener_without_a_usable_key_is_a_warning(tmp_path: Path) -> None:
    assert _warned([], tmp_path) == ["a", "b"]
    [warning] = list(checks.check_keys(loaded(KEYED, tmp_path), []))[:1]
    assert "every request gets 401" in warning.message
    assert warning.fix == "flm-gateway keys create --name NAME"
    assert _warned([_key("k")], tmp_path) == []
    assert _warned([_key("k", revoked=True)], tmp_path) == ["a", "b"]
    scoped = [_key("k", ("a",))]
    assert _warned(scoped, tmp_path) == ["b"]  # a key scoped to a does not serve b
    [warning] = [r for r in checks.check_keys(loaded(KEYED, tmp_path), scoped) if r.subject]
    assert warning.fix == "flm-gateway keys create --name NAME --scopes listener:b"
    declared = KEYED + "security:\n  keys:\n    - {id: ci, hash: 'sha256:" + "1" * 64 + "'}\n"
    assert _warned([], tmp_path, declared) == []


async def test_check_runs_the_key_check_and_shows_config_warnings(tmp_path: Path) -> None:
    path = tmp_path / "flm.yaml"
    path.write_text(
        f"server: {{state_dir: {str(tmp_path / 'state')!r}}}\n"
        + KEYED
        + 'engines: [{name: e, url: "http://127.0.0.1:1/v1"}]\nadmin: {enabled: false}\n'
    )
    results = await run_checks(load_config(path), directory, 1.0)
    by_area = [(r.area, r.subject, r.level) for r in results]
    assert ("auth", "a", Level.WARN) in by_area and ("auth", "b", Level.WARN) in by_area
    [warning] = [r for r in results if r.area == "config" and r.level is Level.WARN]
    assert warning.message.startswith(f"{path}:6:26: engines[0].url:")
    assert "ends in /v1" in warning.message
