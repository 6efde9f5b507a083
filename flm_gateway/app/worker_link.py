"""What joins a worker process to its supervisor (`server.workers` above 1).

The supervisor starts each worker as `flm-gateway run --config FILE --worker N
--ready-fd FD`, with the write end of a pipe as FD. The worker:
- binds its listeners with SO_REUSEPORT (`proxy.mitm_reuse_port`) beside the
  other workers';
- takes neither the state directory's lock nor the pid file (the supervisor
  holds both, so `flm-gateway reload` signals the supervisor);
- serves its admin endpoints on a free loopback port of its own (`ADMIN`), which
  the supervisor scrapes; `admin:` in the file is the supervisor's;
- when every listener is bound, writes `ready <admin port>` to FD, once;
- stops (drains, as on SIGTERM) when its supervisor is gone (it was re-parented).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from flm_gateway.config.admin_settings import AdminConfig

ADMIN = AdminConfig.model_construct(
    enabled=True, bind=("127.0.0.1", 0), hosts=[], allow_remote=False
)
"""A worker's own admin listener: loopback, any free port (the validator refuses port 0)."""

PARENT_POLL = 0.5


@dataclass(frozen=True)
class WorkerLink:
    index: int
    """1..N, for logs."""
    ready_fd: int
    supervisor_pid: int

    def report_ready(self, admin_port: int | None) -> None:
        """Tell the supervisor this worker serves, and where its admin endpoints are."""
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, f"ready {admin_port or 0}\n".encode())
            os.close(self.ready_fd)

    async def watch_supervisor(self, stop: Callable[[], None]) -> None:
        """Call `stop` once the supervisor is gone (even SIGKILLed: no orphan keeps serving)."""
        # No event says that the parent died: poll (PR_SET_PDEATHSIG would kill, not drain).
        while os.getppid() == self.supervisor_pid:  # noqa: ASYNC110
            await asyncio.sleep(PARENT_POLL)
        stop()


def parse_ready(line: bytes) -> int | None:
    """The admin port in a worker's `ready` line; None for anything else."""
    word, _, port = line.decode(errors="replace").strip().partition(" ")
    return int(port) if word == "ready" and port.isdigit() else None
