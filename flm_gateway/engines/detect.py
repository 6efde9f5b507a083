"""Find the engines on this machine: `flm-gateway engines detect`.

Policy:
- What is probed: every engine flm.yaml declares (under its name, with its URL,
  key and health timeout), and each kind's default port on `detection.host`
  (Ollama 11434, vLLM 8000, LM Studio 1234, llama.cpp 8080; overridable per kind,
  `null` skips one) unless a declared engine already points there. The built-in
  default config declares nothing for this purpose: its engines are the default
  ports.
- How: the same check the running gateway makes (`check_engine`: the adapter's
  health signal and model list), all probes at once, each request bounded by
  `detection.timeout` (declared engines: their `health.timeout`). And whether the
  kind's program (`ollama`, `vllm`, `lms`, `llama-server`) is on PATH.
- States: `running-healthy`, `running-degraded` (answers but says it is not
  ready, answers with errors, or lists no model), and when nothing answers:
  `unreachable` for a declared engine, else `installed-only` (program on PATH)
  or `not-found`.
- Cache: results are kept in `<state_dir>/cache/engines-detect.json` for
  `detection.cache_ttl` (5 min), keyed by what was probed and the PATH searched,
  so a repeated call is instant; `refresh` probes again. The cache and the
  output hold no API keys and URLs without user info.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from flm_gateway.config.detection_settings import DetectionSettings
from flm_gateway.config.engine_settings import EngineConfig, EngineKind, HealthCheckSettings
from flm_gateway.engines.adapter import HealthState
from flm_gateway.engines.engine_check import check_engine
from flm_gateway.engines.registry import adapter_for

if TYPE_CHECKING:  # HTTP code is imported only when probing: a cached answer needs none of it
    from flm_gateway.httpio.http_client import HttpSession

CACHE_FILE = Path("cache") / "engines-detect.json"
CACHE_FORMAT = 1

SessionFactory = Callable[[EngineConfig], "HttpSession"]
Which = Callable[[str], str | None]
"""Finds a program on the PATH being searched (shutil.which with a fixed path)."""


class DetectState(StrEnum):
    NOT_FOUND = "not-found"
    INSTALLED_ONLY = "installed-only"
    HEALTHY = HealthState.HEALTHY.value
    DEGRADED = HealthState.DEGRADED.value
    UNREACHABLE = HealthState.UNREACHABLE.value


@dataclass(frozen=True)
class Probe:
    """One place to look: a declared engine, or a kind's default port."""

    config: EngineConfig
    source: str
    """`config` (declared in flm.yaml) or `default-port`."""


@dataclass(frozen=True)
class Detected:
    """What was found at one place."""

    name: str
    kind: str
    url: str
    source: str
    state: str
    program: str | None = None
    version: str | None = None
    models: list[str] = field(default_factory=list)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Detected:
        return cls(**data)


def display_url(url: str) -> str:
    """`url` without user info (a password in a URL is a secret too)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host == "localhost" or host.startswith("127.") or host == "::1":
        host = "loopback"
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def plan(
    engines: Sequence[EngineConfig],
    settings: DetectionSettings,
    port_overrides: dict[EngineKind, int | None] | None = None,
    host: str | None = None,
) -> list[Probe]:
    """The probes to run: declared engines, then the default ports nobody declared."""
    probes = [Probe(config, "config") for config in engines]
    taken = {_host_port(config.url) for config in engines}
    ports = {**settings.ports, **(port_overrides or {})}
    probe_host = host or settings.host
    url_host = f"[{probe_host}]" if ":" in probe_host else probe_host
    for kind in EngineKind:
        port = ports.get(kind, adapter_for(kind).default_port)
        if port is None:
            continue
        url = f"http://{url_host}:{port}"
        if _host_port(url) in taken:
            continue
        config = EngineConfig(
            name=kind.value,
            kind=kind,
            url=url,
            health=HealthCheckSettings(timeout=settings.timeout),
        )
        probes.append(Probe(config, "default-port"))
    return probes


def cache_key(probes: Sequence[Probe], search_path: str) -> str:
    """Identifies a set of probes (never their keys) and the PATH searched."""
    identity = [[p.config.name, p.config.kind.value, p.config.url, p.source] for p in probes]
    raw = json.dumps([identity, search_path], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()


def which_in(search_path: str) -> Which:
    """A `Which` over `search_path` (a PATH string)."""
    return lambda program: shutil.which(program, path=search_path)


async def _detect_one(probe: Probe, session: HttpSession, which: Which) -> Detected:
    from flm_gateway.engines.engine_client import HttpEngineClient

    config = probe.config
    adapter = adapter_for(config.kind)
    program = which(adapter.program) if adapter.program else None
    report = await check_engine(adapter, HttpEngineClient(config, session), declared=config.models)
    base = Detected(
        name=config.name,
        kind=config.kind.value,
        url=display_url(config.url),
        source=probe.source,
        state=DetectState.UNREACHABLE.value,
        program=program,
    )
    if report.state is HealthState.UNREACHABLE:
        if probe.source == "config":
            return _with(base, detail=report.detail)
        address = config.url.split("//", 1)[1]
        if program:
            return _with(
                base,
                state=DetectState.INSTALLED_ONLY.value,
                detail=f"{program} is installed; nothing answers on {address}",
            )
        return _with(
            base,
            state=DetectState.NOT_FOUND.value,
            detail=f"nothing answers on {address}; {adapter.program or 'no program'} not on PATH",
        )
    return _with(
        base,
        state=report.state.value,
        version=report.version,
        models=[m.id for m in report.models or ()],
        detail=report.detail,
    )


def _with(detected: Detected, **changes: Any) -> Detected:
    return Detected(**{**asdict(detected), **changes})


async def detect(
    probes: Sequence[Probe], session_factory: SessionFactory, which: Which
) -> list[Detected]:
    """Run every probe at once; results in probe order."""
    sessions = [session_factory(probe.config) for probe in probes]
    try:
        return list(
            await asyncio.gather(
                *(_detect_one(p, s, which) for p, s in zip(probes, sessions, strict=True))
            )
        )
    finally:
        await asyncio.gather(*(session.close() for session in sessions))


@dataclass(frozen=True)
class CachedResults:
    results: list[Detected]
    age: float


class DetectCache:
    """Results of the last detection, in one JSON file (written atomically)."""

    def __init__(self, state_dir: Path, ttl: float) -> None:
        self.path = state_dir / CACHE_FILE
        self.ttl = ttl

    def load(self, key: str, now: float | None = None) -> CachedResults | None:
        """Fresh results for `key`, or None (missing, stale, other key, unreadable)."""
        now = time.time() if now is None else now
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != CACHE_FORMAT or data.get("key") != key:
                return None
            age = now - float(data["created"])
            if not 0 <= age < self.ttl:
                return None
            return CachedResults([Detected.from_json(item) for item in data["results"]], age)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, key: str, results: Sequence[Detected], now: float | None = None) -> None:
        """Store `results`; raises OSError when the state directory is not writable."""
        payload = {
            "format": CACHE_FORMAT,
            "key": key,
            "created": time.time() if now is None else now,
            "results": [r.to_json() for r in results],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".detect-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(payload, file, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
