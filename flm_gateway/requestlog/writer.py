"""Write request log records off the event loop, in batches, and apply the retention.

Policy: `submit` never blocks and never raises: a record goes into a bounded
queue, or is dropped (and counted) when the queue is full. One asyncio task
waits `BATCH_DELAY` after the first record of a batch, takes whatever is queued
then (up to `BATCH` records) and inserts it in one transaction on a dedicated
thread that owns the SQLite connection: one thread hand-off and one commit per
batch, not per request (at one request at a time, a transaction per record cost
more CPU than the rest of the request log, and the writer thread took the GIL
from the event loop once per request). Records
older than the retention are deleted at start and every `PURGE_EVERY` seconds.
A record the database refuses costs only itself (`RequestLogStore.insert` falls
back to row by row); a write the database itself fails (locked, disk full)
drops its batch. Drops are counted and logged (at most once a minute); serving
is never affected. `stop` writes what is queued (bounded by a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from flm_gateway.observability.flow_summary import FlowSummary
from flm_gateway.requestlog.log_table import RequestLogStore

log = logging.getLogger("flm_gateway.requestlog")

BATCH = 500
BATCH_DELAY = 0.1
"""Seconds a batch waits for more records after its first (records show up that late)."""
PURGE_EVERY = 600.0
STOP_TIMEOUT = 5.0
WARN_EVERY = 60.0

T = TypeVar("T")


class RequestLogWriter:
    """The asynchronous, batched writer of one request log database."""

    def __init__(
        self,
        path: Path,
        retention: float,
        max_queue: int,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.retention = retention
        self._queue: asyncio.Queue[FlowSummary] = asyncio.Queue(max_queue)
        self._on_drop = on_drop
        self._executor: ThreadPoolExecutor | None = None
        self._store: RequestLogStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._last_warning = 0.0
        self.written = 0
        self.dropped = 0
        self.batches = 0

    def submit(self, summary: FlowSummary) -> None:
        """Queue one record (hot path)."""
        try:
            self._queue.put_nowait(summary)
        except asyncio.QueueFull:
            self._drop(1, "the request log queue is full; records are being dropped")

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("%s (%d dropped so far)", why, self.dropped)

    async def _in_thread(self, func: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("the request log writer is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func)

    def _open(self) -> None:
        self._store = RequestLogStore.open(self.path)

    def _write(self, batch: list[FlowSummary]) -> int:
        """Insert `batch` (and purge when due); the number of records refused."""
        if self._store is None:
            raise RuntimeError("the request log store is not open")
        refused = self._store.insert(batch)
        now = time.time()
        if time.monotonic() - self._last_purge >= PURGE_EVERY:
            self._purge(now)
        return refused

    def _purge(self, now: float) -> None:
        if self._store is None:
            raise RuntimeError("the request log store is not open")
        self._last_purge = time.monotonic()
        deleted = self._store.purge(now - self.retention)
        if deleted:
            log.info("request log: deleted %d record(s) past the retention", deleted)

    async def start(self) -> None:
        """Open the database (in the writer thread) and start writing."""
        if self._task is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="flm-requestlog")
        await self._in_thread(self._open)
        await self._in_thread(lambda: self._purge(time.time()))
        self._task = asyncio.create_task(self._run(), name="request-log-writer")

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._queue.qsize() < BATCH - 1:
                await asyncio.sleep(BATCH_DELAY)
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._flush(batch)

    async def _flush(self, batch: list[FlowSummary]) -> None:
        self.batches += 1
        try:
            refused = await self._in_thread(lambda: self._write(batch))
        except Exception as exc:
            self._drop(len(batch), f"request log write failed: {exc}")
            return
        self.written += len(batch) - refused
        if refused:
            self._drop(refused, f"request log: {refused} record(s) could not be stored")

    async def flush(self) -> None:
        """Write everything queued now (used by stop and by tests)."""
        while not self._queue.empty():
            batch: list[FlowSummary] = []
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._flush(batch)

    async def stop(self) -> None:
        """Write what is queued (at most `STOP_TIMEOUT` seconds), then close."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        try:
            await asyncio.wait_for(self.flush(), STOP_TIMEOUT)
        except TimeoutError:
            self._drop(self._queue.qsize(), "request log: gave up writing at shutdown")
        store = self._store
        if store is not None:
            await self._in_thread(store.close)
        self._store = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
