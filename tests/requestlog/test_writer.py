from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

from flm_gateway.observability.flow_summary import summarize
from flm_gateway.requestlog.log_table import RequestLogStore
from flm_gateway.requestlog.query import LogFilter, search
from flm_gateway.requestlog.writer import RequestLogWriter
from tests.ops_flows import routed_flow


def rows(tmp_path: Path) -> int:
    store = RequestLogStore.open(tmp_path / "state.db", create=False)
    try:
        return len(search(store, LogFilter(), 10_000))
    finally:
        store.close()


async def test_records_are_written_in_the_background(tmp_path: Path) -> None:
    writer = RequestLogWriter(tmp_path / "state.db", retention=3600, max_queue=1000)
    await writer.start()
    summary = summarize(routed_flow(started=time.time()))
    for _ in range(250):
        writer.submit(summary)
    deadline = time.monotonic() + 5
    while writer.written < 250 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert writer.written == 250
    await writer.stop()
    assert rows(tmp_path) == 250


async def test_stop_writes_what_is_queued(tmp_path: Path) -> None:
    writer = RequestLogWriter(tmp_path / "state.db", retention=3600, max_queue=1000)
    await writer.start()
    summary = summarize(routed_flow(started=time.time()))
    for _ in range(30):
        writer.submit(summary)
    await writer.stop()
    assert rows(tmp_path) == 30


async def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    dropped: list[int] = []
    writer = RequestLogWriter(
        tmp_path / "state.db", retention=3600, max_queue=100, on_drop=dropped.append
    )
    summary = summarize(routed_flow(started=time.time()))
    for _ in range(105):  # not started: nothing drains the queue
        writer.submit(summary)
    assert writer.dropped == 5 and sum(dropped) == 5


async def test_retention_is_applied_at_start(tmp_path: Path) -> None:
    store = RequestLogStore.open(tmp_path / "state.db")
    old = summarize(routed_flow(started=time.time() - 7200))
    store.insert([old, dataclasses.replace(old, started=time.time())])
    store.close()
    writer = RequestLogWriter(tmp_path / "state.db", retention=3600, max_queue=100)
    await writer.start()
    await writer.stop()
    assert rows(tmp_path) == 1


async def test_a_failing_database_never_raises(tmp_path: Path) -> None:
    writer = RequestLogWriter(tmp_path / "state.db", retention=3600, max_queue=100)
    await writer.start()
    store = RequestLogStore.open(tmp_path / "state.db")
    store.connection.execute("DROP TABLE request_log")
    store.close()
    writer.submit(summarize(routed_flow()))
    await writer.flush()
    assert writer.dropped == 1
    await writer.stop()


async def test_a_record_the_database_refuses_costs_only_itself(tmp_path: Path) -> None:
    dropped: list[int] = []
    writer = RequestLogWriter(
        tmp_path / "state.db", retention=3600, max_queue=100, on_drop=dropped.append
    )
    await writer.start()
    summary = summarize(routed_flow(started=time.time()))
    writer.submit(summary)
    writer.submit(dataclasses.replace(summary, request_id=None))  # type: ignore[arg-type]
    writer.submit(dataclasses.replace(summary, path="/v1/\udcff"))  # a non-UTF-8 path
    writer.submit(summary)
    await writer.flush()
    assert (writer.written, writer.dropped, dropped) == (3, 1, [1])
    await writer.stop()
    assert rows(tmp_path) == 3


async def test_records_that_trickle_in_share_one_batch(tmp_path: Path) -> None:
    """One request at a time must not cost a thread hand-off and a commit each."""
    writer = RequestLogWriter(tmp_path / "state.db", retention=3600, max_queue=1000)
    await writer.start()
    summary = summarize(routed_flow(started=time.time()))
    for _ in range(20):
        writer.submit(summary)
        await asyncio.sleep(0.001)  # the writer task runs between two records
    deadline = time.monotonic() + 5
    while writer.written < 20 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert writer.written == 20
    assert writer.batches == 1
    await writer.stop()
    assert rows(tmp_path) == 20
