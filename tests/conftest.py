"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from flm_gateway.proxy.runtime import Runtime
from tests.support.flows import RuntimeFactory, build_runtime

pytest_plugins = ["tests.support.llama_fixtures"]


@pytest.fixture
async def make_runtime() -> AsyncIterator[RuntimeFactory]:
    """Build runtimes (see `build_runtime`); their engine sessions are closed afterwards."""
    built: list[Runtime] = []

    def factory(*args: Any, **kwargs: Any) -> Runtime:
        runtime = build_runtime(*args, **kwargs)
        built.append(runtime)
        return runtime

    yield factory
    for runtime in built:
        await runtime.directory.close()
