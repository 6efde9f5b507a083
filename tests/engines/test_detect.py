"""Detection: probes, states per kind against the fake engines, PATH, the cache."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from flm_gateway.config.detection_settings import DetectionSettings
from flm_gateway.config.engine_settings import EngineConfig, EngineKind
from flm_gateway.egress.sessions import direct_session
from flm_gateway.engines.detect import (
    DetectCache,
    Detected,
    Probe,
    cache_key,
    detect,
    display_url,
    plan,
    which_in,
)
from flm_gateway.httpio.http_client import HttpSession
from tests.support.fake_engines import FakeEngine
from tests.support.gateway_process import free_port


def session(config: EngineConfig) -> HttpSession:
    return direct_session()


def program_dir(tmp_path: Path, *names: str) -> str:
    """A directory holding executables named `names`, as a PATH string."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for name in names:
        program = directory / name
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return str(directory)


def test_plan_default_ports_overrides_and_declared_engines() -> None:
    settings = DetectionSettings(ports={EngineKind.VLLM: 8001, EngineKind.LMSTUDIO: None})
    declared = [EngineConfig(name="box", kind=EngineKind.OLLAMA, url="http://localhost:11434")]
    probes = plan(declared, settings, {EngineKind.LLAMACPP: 9090})
    assert [(p.config.name, p.config.url, p.source) for p in probes] == [
        ("box", "http://localhost:11434", "config"),
        # ollama's default port is taken by the declared engine (localhost = 127.0.0.1)
        ("vllm", "http://127.0.0.1:8001", "default-port"),
        ("llamacpp", "http://127.0.0.1:9090", "default-port"),
    ]
    assert probes[1].config.health.timeout == 1.0
    ipv6 = plan([], DetectionSettings(), host="::1")
    assert ipv6[0].config.url == "http://[::1]:11434"


def test_plan_openai_kind_only_when_given_a_port() -> None:
    kinds = [p.config.kind for p in plan([], DetectionSettings())]
    assert kinds == [EngineKind.OLLAMA, EngineKind.VLLM, EngineKind.LMSTUDIO, EngineKind.LLAMACPP]
    with_openai = plan([], DetectionSettings(ports={EngineKind.OPENAI: 5000}))
    assert with_openai[-1].config.url == "http://127.0.0.1:5000"


async def test_states_of_every_kind_against_fake_engines(tmp_path: Path) -> None:
    path = program_dir(tmp_path, "vllm", "lms")
    async with (
        FakeEngine("ollama", ["llama3.2"]) as ollama,
        FakeEngine("lmstudio", ["qwen3-4b"]) as lmstudio,
        FakeEngine("llamacpp", ["tiny"]) as llamacpp,
        FakeEngine("openai", ["gpt-x"], api_key="sk-secret") as generic,
    ):
        llamacpp.set_health("loading")
        silent = free_port()
        declared = [
            EngineConfig(
                name="remote", kind=EngineKind.OPENAI, url=generic.url, api_key="sk-secret"
            ),
            EngineConfig(name="gone", kind=EngineKind.VLLM, url=f"http://127.0.0.1:{free_port()}"),
        ]
        ports = {
            EngineKind.OLLAMA: ollama.port,
            EngineKind.VLLM: silent,  # program on PATH, nothing listening
            EngineKind.LMSTUDIO: lmstudio.port,
            EngineKind.LLAMACPP: llamacpp.port,
        }
        probes = plan(declared, DetectionSettings(ports=ports))
        found = {d.name: d for d in await detect(probes, session, which_in(path))}
    states = {name: d.state for name, d in found.items()}
    assert states == {
        "remote": "running-healthy",
        "gone": "unreachable",
        "ollama": "running-healthy",
        "vllm": "installed-only",
        "lmstudio": "running-healthy",
        "llamacpp": "running-degraded",
    }
    assert found["ollama"].version and found["ollama"].models == ["llama3.2:latest"]
    assert found["lmstudio"].models == ["qwen3-4b"]
    assert found["llamacpp"].detail == "Loading model"
    assert found["vllm"].program == os.path.join(path, "vllm")
    assert found["vllm"].detail.startswith(f"{path}/vllm is installed; nothing answers on")
    assert found["remote"].models == ["gpt-x"]  # the configured key was used
    assert found["ollama"].program is None
    assert all("sk-secret" not in json.dumps(d.to_json()) for d in found.values())


async def test_not_found_without_program(tmp_path: Path) -> None:
    probes = plan([], DetectionSettings(ports={kind: None for kind in EngineKind}))
    assert probes == []
    probes = plan(
        [],
        DetectionSettings(
            ports={
                EngineKind.OLLAMA: free_port(),
                EngineKind.VLLM: None,
                EngineKind.LMSTUDIO: None,
                EngineKind.LLAMACPP: None,
            }
        ),
    )
    [result] = await detect(probes, session, which_in(str(tmp_path)))
    assert result.state == "not-found"
    assert "ollama not on PATH" in result.detail


def test_display_url_drops_user_info() -> None:
    assert display_url("http://user:pw@host:1/base") == "http://host:1/base"
    assert display_url("http://host:1") == "http://host:1"


def test_cache_round_trip_expiry_and_key(tmp_path: Path) -> None:
    cache = DetectCache(tmp_path / "state", ttl=300)
    results = [Detected("x", "ollama", "http://127.0.0.1:1", "default-port", "not-found")]
    assert cache.load("k") is None
    cache.save("k", results, now=1000.0)
    loaded = cache.load("k", now=1010.0)
    assert loaded is not None and loaded.results == results and loaded.age == 10.0
    assert cache.load("other", now=1010.0) is None
    assert cache.load("k", now=1301.0) is None  # stale
    cache.path.write_text("{not json")
    assert cache.load("k") is None


def test_cache_key_changes_with_probes_and_path_but_not_with_keys() -> None:
    def probe(key: str | None, url: str = "http://127.0.0.1:1") -> Probe:
        return Probe(EngineConfig(name="e", kind=EngineKind.OPENAI, url=url, api_key=key), "config")

    assert cache_key([probe("a")], "/bin") == cache_key([probe("b")], "/bin")
    assert cache_key([probe("a")], "/bin") != cache_key([probe("a")], "/usr/bin")
    assert cache_key([probe("a")], "/bin") != cache_key([probe("a", "http://127.0.0.1:2")], "/bin")


@pytest.mark.parametrize("kind", ["ollama", "vllm", "lmstudio", "llamacpp"])
async def test_a_stopped_engine_is_seen_after_refresh(kind: str, tmp_path: Path) -> None:
    async with FakeEngine(kind, ["m"]) as engine:
        config = EngineConfig(name="e", kind=EngineKind(kind), url=engine.url)
        [before] = await detect([Probe(config, "config")], session, which_in(str(tmp_path)))
        await engine.stop()
        [after] = await detect([Probe(config, "config")], session, which_in(str(tmp_path)))
    assert (before.state, after.state) == ("running-healthy", "unreachable")
