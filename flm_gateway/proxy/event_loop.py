"""The event loop the gateway serves on: uvloop when it is installed, else asyncio's own.

uvloop (`pip install 'flm-gateway[uvloop]'`) cuts the gateway's CPU per request by a
fifth to a third (docs/performance.md); without it nothing changes. The choice is
made as Uvicorn's `--loop auto` makes it: by what is importable, no setting.

One adjustment: mitmproxy runs its master with asyncio's eager task factory, and
uvloop 0.23 cannot call that factory (`create_task` fails with "unexpected keyword
argument 'eager_start'", so no listener would start). `WithoutEagerTasks` keeps the
loop's default factory instead: tasks start on the loop's next iteration, as
mitmproxy runs them on Python < 3.12. Any other factory is installed as asked.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any


class WithoutEagerTasks:
    """Mixin for an event loop class: `set_task_factory(eager_task_factory)` keeps the default."""

    def set_task_factory(self, factory: Any) -> None:
        if factory is asyncio.eager_task_factory:
            factory = None
        super().set_task_factory(factory)  # type: ignore[misc]


def loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """(the factory for `asyncio.run`, a name for the log): uvloop's loop when importable,
    else (None, "asyncio"), i.e. asyncio's default loop."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None, "asyncio"
    loop_class = type("UvloopWithoutEagerTasks", (WithoutEagerTasks, uvloop.Loop), {})
    return loop_class, f"uvloop {getattr(uvloop, '__version__', '')}".strip()
