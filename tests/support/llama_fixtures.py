"""pytest fixtures for the real llama.cpp `llama-server`; load this module as a plugin.

In the root `tests/conftest.py`:

    pytest_plugins = ["tests.support.llama_fixtures"]

Fixtures:
- `llama_server_binary` (session): the binary's path, from `scripts/llama-server.sh`.
- `tiny_model` (session): the cached tiny GGUF.
- `llama_server` (function): a started server (alias `tiny`, no API key), stopped afterwards.
- `make_llama_server` (function): a factory taking `run_llama_server`'s keyword arguments, for
  servers with an API key, a fixed port or other flags; everything it started is stopped after
  the test.

Building from source takes about 10 min, far past the per-test timeout, which also covers
fixture set-up. So the `pytest_collection_finish` hook resolves the binary (building it if
needed) before the first test runs, when a selected test needs it; the build's output goes to
`<cache>/flm-gateway/llama-server/build.log`. Set FLM_SKIP_LLAMA=1 to skip these tests instead,
e.g. on a machine that cannot build.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol

import pytest

from tests.support.llama_server import (
    LlamaServer,
    LlamaServerError,
    find_llama_server,
    run_llama_server,
)
from tests.support.tiny_model import tiny_model_path

__all__ = [
    "MakeLlamaServer",
    "llama_server",
    "llama_server_binary",
    "make_llama_server",
    "pytest_collection_finish",
    "tiny_model",
]

_BINARY_KEY: Final = pytest.StashKey[Path | LlamaServerError]()
_FIXTURE: Final = "llama_server_binary"


class MakeLlamaServer(Protocol):
    """The `make_llama_server` factory: `run_llama_server` with the binary and model bound."""

    def __call__(
        self,
        port: int | None = None,
        *,
        alias: str = "tiny",
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> LlamaServer: ...


def _skip_requested() -> bool:
    return os.environ.get("FLM_SKIP_LLAMA", "") not in ("", "0")


def _build_log() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "flm-gateway" / "llama-server" / "build.log"


def _resolve(config: pytest.Config) -> Path | LlamaServerError:
    """Find the binary quickly, else build it, telling the terminal why the run pauses."""
    log = _build_log()
    try:
        return find_llama_server(build=False, stderr=log)
    except LlamaServerError as exc:
        if os.environ.get("FLM_LLAMA_SERVER"):  # an explicit choice that does not run
            return exc
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"llama-server: none found, building it from source (~10 min on 2 cores); log: {log}"
        )
    try:
        return find_llama_server(build=True, stderr=log)
    except LlamaServerError as exc:
        return exc


def pytest_collection_finish(session: pytest.Session) -> None:
    """Resolve (maybe build) the binary before any test runs, outside any test timeout."""
    config = session.config
    if config.option.collectonly or _skip_requested() or _BINARY_KEY in config.stash:
        return
    if any(_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items):
        config.stash[_BINARY_KEY] = _resolve(config)


@pytest.fixture(scope="session")
def llama_server_binary(pytestconfig: pytest.Config) -> Path:
    """Path of a working `llama-server`; fails the test with the build log if there is none."""
    if _skip_requested():
        pytest.skip("FLM_SKIP_LLAMA is set")
    result = pytestconfig.stash.get(_BINARY_KEY, None)
    if result is None:  # the hook was not loaded: resolve now, inside the test's timeout
        result = _resolve(pytestconfig)
        pytestconfig.stash[_BINARY_KEY] = result
    if isinstance(result, LlamaServerError):
        pytest.fail(f"no llama-server: {result}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random-weight llama GGUF, generated once into the cache."""
    return tiny_model_path()


@pytest.fixture
def make_llama_server(
    llama_server_binary: Path, tiny_model: Path, tmp_path: Path
) -> Iterator[MakeLlamaServer]:
    """Factory for started servers; all of them are stopped when the test ends."""
    servers: list[LlamaServer] = []

    def make(
        port: int | None = None,
        *,
        alias: str = "tiny",
        api_key: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> LlamaServer:
        server = run_llama_server(
            port,
            alias=alias,
            api_key=api_key,
            binary=llama_server_binary,
            model=tiny_model,
            extra_args=extra_args,
            startup_timeout=startup_timeout,
            log_dir=tmp_path,
        )
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def llama_server(make_llama_server: MakeLlamaServer) -> LlamaServer:
    """A started `llama-server` with the tiny model (alias `tiny`, no API key)."""
    return make_llama_server()
