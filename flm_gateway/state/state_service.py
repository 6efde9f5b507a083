"""The gateway's handle on the state store: never blocking the event loop, failing closed.

- **One worker thread** runs every store call (SQLite connections belong to one
  thread; Redis calls block). Addons never call the store from a hook.
- **An in-memory view** for the hot path: keys by secret hash and the block
  list, rebuilt from the store when its `generation()` changes (polled every
  `refresh_interval`, so a `keys revoke` or `security blocklist add` from the
  CLI applies within about a second) and updated at once by this process's own
  writes (`block`, `unblock`).
- **New keys at once** (`check_new_keys`): before `auth` refuses a key the view
  does not know, it asks for a check of the store made after it asked: the
  store's `generation()` is read and, if it moved, the keys (only) are reloaded.
  Checks are shared and paced (`state.rounds.PacedRounds`): one at a time, at
  least `KEY_CHECK_INTERVAL` (50 ms) apart, so however many unknown keys arrive
  the store sees at most 20 generation reads a second from them; a caller waits
  at most `KEY_CHECK_TIMEOUT` (2 s). Works the same with SQLite and Redis and
  with any number of gateway processes: the store itself is the only channel.
- **Background writes**: audit events, blocks and counters are queued and
  written in batches by a flusher task; a batch the store fails (down, full,
  locked: a `StateError`) stays queued, in order, and is retried. A record the
  store refuses (`RecordRefused`: retrying cannot help) costs only itself
  (`flm_gateway.state.refusals`): a refused audit event is replaced in the chain
  by `audit.unwritable`, a refused counter or write is dropped and recorded so.
- **Durable audit events (group commit)**: `commit_audit(events)` returns once
  the events are durable (the store's append returned: see the backends). The
  first caller starts a commit at once; callers that arrive while it runs are
  committed together by the next one, so a burst costs one transaction per
  round trip, not one per event. A commit that fails, or takes longer than
  `COMMIT_TIMEOUT`, raises StateError (the events stay queued and are retried);
  after that, commits fail at once until a write succeeds again (the flush
  loop retries every second), so an outage costs one slow answer, not one per
  request.
- **Tamper checks** (`watch`, `flm_gateway.state.audit_watch`): at open against
  the anchor file, at every append against the last record this process wrote
  or saw.
- **Anchors outside the store**: the store's anchor file is flushed every
  refresh, and the head is logged at INFO at start, every `HEAD_LOG_INTERVAL`
  while it moves, and at stop.
- **Fail closed**: `usable` is False when the last successful store round trip
  is older than `stale_after` (a blip shorter than that is ridden out: the
  view is at most that old), or the queue passed `max_pending`. Security
  addons then answer 503 instead of deciding on stale state.

Other subsystems (request log, metrics) may use `call` and `submit` to run their
own store operations in the same thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from flm_gateway.config import LoadedConfig
from flm_gateway.config.state_settings import AuditLogSettings
from flm_gateway.core.netset import NetworkMap
from flm_gateway.state import describe_store, open_store
from flm_gateway.state.audit_watch import AuditWatch, tamper_event
from flm_gateway.state.refusals import (
    Appended,
    append_audit,
    is_refusal,
    refused_counters,
    refused_write,
)
from flm_gateway.state.rounds import PacedRounds
from flm_gateway.state.store import (
    AuditEvent,
    AuditHead,
    AuditStatus,
    BlockRecord,
    KeyRecord,
    KeySecret,
    StateError,
    StateStore,
)

log = logging.getLogger("flm_gateway.state")

T = TypeVar("T")
OPEN_TIMEOUT = 30.0
PURGE_INTERVAL = 3600.0
COMMIT_TIMEOUT = 3.0
"""How long `commit_audit` waits for its group commit before failing. A commit takes
about a millisecond; this bounds how long a store that stopped answering holds the first
answers (the store's own timeouts, SQLite's busy timeout and Redis's socket timeout, are
5s: the write may still land later)."""
HEAD_LOG_INTERVAL = 60.0
KEY_CHECK_INTERVAL = 0.05
KEY_CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class KeyEntry:
    """What a secret hash resolves to."""

    key: KeyRecord
    secret: KeySecret


@dataclass(frozen=True)
class StoreView:
    """A snapshot of the store's keys and blocks, indexed for lookups.

    Replaced whole on refresh; only `blocks` changes in place, by this process's
    own `block`/`unblock`, so they apply before the write reaches the store.
    """

    keys: tuple[KeyRecord, ...]
    by_hash: Mapping[str, KeyEntry]
    blocks: NetworkMap[BlockRecord]

    @classmethod
    def build(cls, keys: list[KeyRecord], blocks: list[BlockRecord]) -> StoreView:
        network_map: NetworkMap[BlockRecord] = NetworkMap()
        for block in blocks:
            network_map.add(block.cidr, block)
        return cls(tuple(keys), index_keys(keys), network_map)

    def with_keys_of(self, other: StoreView) -> StoreView:
        """This view's blocks with `other`'s keys."""
        return StoreView(other.keys, other.by_hash, self.blocks)


def index_keys(keys: list[KeyRecord]) -> dict[str, KeyEntry]:
    return {secret.hash: KeyEntry(key, secret) for key in keys for secret in key.secrets}


Write = Callable[[StateStore], object]


class StateService:
    """See the module docstring. One per gateway process."""

    def __init__(
        self,
        refresh_interval: float = 1.0,
        stale_after: float = 10.0,
        max_pending: int = 20000,
        flush_interval: float = 0.1,
    ) -> None:
        self.refresh_interval = refresh_interval
        self.stale_after = stale_after
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.block_memory = 7 * 86400.0
        self.view = StoreView.build([], [])
        self.location: str | None = None
        self._store: StateStore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._generation: int | None = None
        self._keys_generation: int | None = None
        """The generation the keys of `view` were read at."""
        self._reads = itertools.count(1)
        self._keys_read = 0
        """Which read the keys of `view` come from: a slower, older read never replaces them."""
        self._key_checks = PacedRounds(self._check_keys, KEY_CHECK_INTERVAL, KEY_CHECK_TIMEOUT)
        self._last_ok = 0.0
        self._local_changes = 0
        self._writes: list[Write] = []
        self._audit: list[AuditEvent] = []
        self._counters: dict[str, int] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._committer: asyncio.Task[None] | None = None
        self._before_stop: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._was_usable = True
        self.watch = AuditWatch()
        self._writes_failing = False
        self._sealing: AuditLogSettings | None = None

    # -- lifecycle ----------------------------------------------------------

    def open(self, loaded: LoadedConfig) -> None:
        """Open the store `loaded` names and load the view (blocking; before serving).

        Raises StateError. Reopening at another location, or with another audit key or
        anchor file (`state.audit`), is refused: that needs a restart.
        """
        problems = self.reopen_problems(loaded)
        if problems:
            raise StateError(problems[0][1])
        self.configure(loaded)
        if self._store is not None:
            return
        location = describe_store(loaded)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flm-state")
        writer = f"gateway:{os.getpid()}"
        try:
            self._store = self._executor.submit(open_store, loaded, writer).result(OPEN_TIMEOUT)
            read = next(self._reads)
            snapshot = self._executor.submit(self._read_snapshot).result(OPEN_TIMEOUT)
            self._apply_snapshot(snapshot, read)
            self.watch.head, problem = self._executor.submit(
                AuditWatch.check_open, self._store
            ).result(OPEN_TIMEOUT)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor, self._store = None, None
            raise
        self.location = location
        self._sealing = loaded.config.state.audit
        log.info("state store: %s", location)
        self.watch.log_head("at start")
        if problem is not None:
            self.watch.found(problem)
            self._audit.insert(0, tamper_event(problem, "anchor"))

    def reopen_problems(self, loaded: LoadedConfig) -> list[tuple[tuple[str, ...], str]]:
        """What the open store cannot take from `loaded` without a restart, each with the
        config path it is about (none while the store is closed)."""
        if self._store is None:
            return []
        problems: list[tuple[tuple[str, ...], str]] = []
        location = describe_store(loaded)
        if location != self.location:
            problems.append(
                (
                    ("state",),
                    f"the state store moved from {self.location} to {location}; restart the "
                    "gateway to use the new location",
                )
            )
        if loaded.config.state.audit != self._sealing:
            problems.append(
                (
                    ("state", "audit"),
                    "state.audit (the audit key or anchor file) changed; restart the gateway "
                    "to use it",
                )
            )
        return problems

    def configure(self, loaded: LoadedConfig) -> None:
        """Take what `loaded` may change while the store is open (timings, block memory)."""
        self.refresh_interval = loaded.config.state.refresh_interval
        self.stale_after = max(loaded.config.state.stale_after, 2 * self.refresh_interval)
        self.block_memory = loaded.config.security.auto_block.remember

    def start(self) -> None:
        """Start the refresh and flush loops (call inside the running event loop)."""
        if self._tasks or self._store is None:
            return
        self._wake = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._refresh_loop(), name="flm-state-refresh"),
            asyncio.create_task(self._flush_loop(), name="flm-state-flush"),
        ]
        if self.pending or self._counters:
            self._wake.set()  # e.g. config.loaded, queued before the loop ran

    def before_stop(self, callback: Callable[[], None]) -> None:
        """Call `callback` at `stop`, before the last flush (to queue final writes)."""
        self._before_stop.append(callback)

    async def stop(self) -> None:
        """Flush what is queued, stop the loops and close the store."""
        for callback in self._before_stop:
            try:
                callback()
            except Exception:
                log.exception("a final write failed")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._key_checks.stop()
        if self._store is not None:
            try:
                await self.flush()
            except StateError as exc:
                log.error("state store: %d write(s) lost at shutdown: %s", self.pending, exc)
            self.watch.log_head("at stop")
        self.close()

    def close(self) -> None:
        """Close the store and the worker thread (queued writes not flushed are dropped)."""
        store, executor = self._store, self._executor
        self._store, self._executor = None, None
        if executor is not None:
            if store is not None:
                with contextlib.suppress(Exception):
                    executor.submit(store.close).result(5)
            executor.shutdown(wait=True)

    # -- health -------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._writes) + len(self._audit)

    @property
    def usable(self) -> bool:
        """Whether security decisions may rely on the view (see the module docstring)."""
        ok = (
            self._store is not None
            and time.monotonic() - self._last_ok < self.stale_after
            and self.pending < self.max_pending
        )
        if ok != self._was_usable:
            self._was_usable = ok
            if ok:
                log.warning("state store usable again")
            else:
                log.error("state store unusable: security addons answer 503 until it recovers")
        return ok

    # -- the worker thread ----------------------------------------------------

    def _submit(self, fn: Callable[[StateStore], T]) -> Future[T]:
        store, executor = self._store, self._executor
        if store is None or executor is None:
            raise StateError("the state store is not open")
        return executor.submit(fn, store)

    async def call(self, fn: Callable[[StateStore], T]) -> T:
        """Run `fn(store)` in the store thread and await its result."""
        return await asyncio.wrap_future(self._submit(fn))

    def call_sync(self, fn: Callable[[StateStore], T], timeout: float = 30.0) -> T:
        """Run `fn(store)` in the store thread and wait (only outside the event loop)."""
        return self._submit(fn).result(timeout)

    def submit(self, fn: Write) -> None:
        """Queue a write; it runs in order with the other queued writes."""
        self._writes.append(fn)
        self._local_changes += 1
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- what addons call -----------------------------------------------------

    def audit(self, event: AuditEvent) -> None:
        """Queue an audit event (written in the background, within `flush_interval`)."""
        self._audit.append(event)
        self._poke()

    async def commit_audit(self, events: Sequence[AuditEvent]) -> None:
        """Queue `events` and return once they are durable (group commit; see the module
        docstring). Raises StateError if the commit fails or takes over `COMMIT_TIMEOUT`."""
        self._audit.extend(events)
        if self._writes_failing:
            # The last write failed and none succeeded since: fail at once rather than make
            # every answer wait for a store that is down (the flush loop keeps retrying).
            self._poke()
            raise StateError("the state store is failing writes; the events stay queued")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting(), name="flm-audit-commit")
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT):
                await future
        except TimeoutError:
            self._writes_failing = True
            raise StateError(f"the audit log did not commit within {COMMIT_TIMEOUT:g}s") from None

    async def _commit_waiting(self) -> None:
        while self._waiters:
            try:
                await self.flush()
            except Exception as exc:
                # flush failed the waiters of its batch; those that came since fail too
                # (their events stay queued for the flush loop's retry).
                _settle(self._waiters, exc)
                self._waiters = []
                return

    def count(self, deltas: Mapping[str, int]) -> None:
        """Add to named counters (written in batches, within `flush_interval`)."""
        if not self._counters:
            self._poke()
        for name, delta in deltas.items():
            self._counters[name] = self._counters.get(name, 0) + delta

    def block(self, record: BlockRecord) -> None:
        """Block `record.cidr` now (in memory) and persist it in the background."""
        self.view.blocks.add(record.cidr, record)

        def put_block(store: StateStore) -> None:
            store.put_block(record)

        self.submit(put_block)

    def unblock(self, cidr: str) -> None:
        self.view.blocks.remove(cidr)

        def remove_block(store: StateStore) -> None:
            store.remove_block(cidr)

        self.submit(remove_block)

    # -- refresh ----------------------------------------------------------------

    def _read_snapshot(self, store: StateStore | None = None) -> tuple[int, StoreView]:
        store = store or self._store
        if store is None:
            raise StateError("the state store is not open")
        generation = store.generation()
        return generation, StoreView.build(store.list_keys(), store.list_blocks())

    def _apply_snapshot(self, snapshot: tuple[int, StoreView], read: int) -> None:
        self._generation, view = snapshot
        if read > self._keys_read:
            self._keys_read, self._keys_generation = read, self._generation
            self.view = view
        else:  # a key check read the keys after this snapshot did: keep those
            self.view = view.with_keys_of(self.view)
        self._last_ok = time.monotonic()

    async def refresh(self, force: bool = False) -> bool:
        """Reload the view if the store changed; True if it was reloaded."""
        local_changes = self._local_changes
        generation = await self.call(lambda store: store.generation())
        self._last_ok = time.monotonic()
        if generation == self._generation and not force:
            return False
        read = next(self._reads)
        snapshot = await self.call(self._read_snapshot)
        if self._local_changes != local_changes or self._writes:
            # Our own write raced the read: keep the memory view, reread next round.
            self._generation = None
            return False
        self._apply_snapshot(snapshot, read)
        return True

    @property
    def key_checks(self) -> int:
        """Store checks made for unknown keys so far (each shared by every caller that waited)."""
        return self._key_checks.rounds

    async def check_new_keys(self) -> bool:
        """Bring the keys of `view` up to date with a store read begun after this call.

        False when the store did not answer in time (see the module docstring).
        """
        if self._store is None:
            return False
        return await self._key_checks.join()

    async def _check_keys(self) -> bool:
        known = self._keys_generation

        def read(store: StateStore) -> tuple[int, StoreView | None]:
            generation = store.generation()  # first: keys read after it are at least as new
            if generation == known:
                return generation, None
            keys = store.list_keys()
            return generation, StoreView(tuple(keys), index_keys(keys), NetworkMap())

        read_number = next(self._reads)
        try:
            generation, keys = await self.call(read)
        except StateError as exc:
            log.warning("state store: looking for new keys failed: %s", exc)
            return False
        self._last_ok = time.monotonic()
        if keys is not None and read_number > self._keys_read:
            self._keys_read, self._keys_generation = read_number, generation
            self.view = self.view.with_keys_of(keys)
        return True

    def _purge(self, store: StateStore) -> int:
        return store.purge_blocks(time.time() - self.block_memory)

    async def _refresh_loop(self) -> None:
        last_purge = last_head_log = time.monotonic()
        while True:
            await asyncio.sleep(self.refresh_interval)
            if self.pending or self._counters:
                self._poke()
            try:
                await self.refresh()
                if self._anchor_pending:
                    await self.call(_flush_anchor)
                if time.monotonic() - last_head_log >= HEAD_LOG_INTERVAL:
                    last_head_log = time.monotonic()
                    self.watch.log_head("now")
                if time.monotonic() - last_purge > PURGE_INTERVAL:
                    last_purge = time.monotonic()
                    await self.call(self._purge)
            except StateError as exc:
                log.error("state store refresh failed: %s", exc)
            except Exception:
                log.exception("state store refresh failed")

    # -- flush ------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything queued now; raises StateError (what was not written stays queued)."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            writes, events, counters = self._writes, self._audit, self._counters
            waiters = self._waiters
            self._writes, self._audit, self._counters, self._waiters = [], [], {}, []
            if not (writes or events or counters):
                _settle(waiters)
                return
            done = _Progress(self.watch.head)
            work = self._submit(
                lambda store: self._write_all(store, writes, events, counters, done)
            )
            try:
                await asyncio.shield(asyncio.wrap_future(work))
            except BaseException as exc:
                if not work.done():
                    # Cancelled (stop) while the store thread writes: let it finish, so
                    # `done` is exact and nothing is requeued that was written.
                    with contextlib.suppress(BaseException):
                        await asyncio.wrap_future(work)
                written = self._requeue(writes, events, counters, done)
                _settle(waiters, None if written else _state_error(exc))
                self._writes_failing = True
                raise
            finally:
                self.watch.appended(done.audit.records, done.audit.tampered)
            self._last_ok = time.monotonic()
            self._writes_failing = False
            _settle(waiters)

    def _write_all(
        self,
        store: StateStore,
        writes: list[Write],
        events: list[AuditEvent],
        counters: dict[str, int],
        done: _Progress,
    ) -> None:
        """In the store thread: queued writes, then counters, then the audit batch (one
        transaction, with the tamper check), with the `audit.unwritable` events of what
        the store refused on the way (`flm_gateway.state.refusals`); `done` says how far
        it got. Raises StateError when the store is down."""
        for write in writes:
            try:
                write(store)
            except Exception as exc:
                if not is_refusal(exc):
                    raise
                done.lost.append(refused_write(getattr(write, "__name__", "write"), exc))
            done.writes += 1
        done.lost += refused_counters(store.add_counters(counters), counters)
        done.counters = True
        append_audit(store, [*events, *done.lost], done.audit)

    def flush_sync(self) -> None:
        """`flush` for code outside the event loop (tests, shutdown paths); like `flush`,
        what was not written stays queued when the store fails."""
        writes, events, counters = self._writes, self._audit, self._counters
        self._writes, self._audit, self._counters = [], [], {}
        done = _Progress(self.watch.head)
        try:
            self.call_sync(lambda store: self._write_all(store, writes, events, counters, done))
        except BaseException:
            self._requeue(writes, events, counters, done)
            raise
        finally:
            self.watch.appended(done.audit.records, done.audit.tampered)

    def _requeue(
        self,
        writes: list[Write],
        events: list[AuditEvent],
        counters: dict[str, int],
        done: _Progress,
    ) -> bool:
        """Put back in the queues what a failed flush did not write (in front of anything
        newer, so the order holds); True when the whole audit batch was written."""
        self._writes = writes[done.writes :] + self._writes
        batch = events + done.lost
        self._audit = batch[done.audit.events :] + self._audit
        if not done.counters:
            for name, delta in counters.items():
                self._counters[name] = self._counters.get(name, 0) + delta
        return done.audit.events == len(batch)

    def audit_status(self) -> AuditStatus:
        """For the metrics: the head this process knows, and tamper findings since start."""
        return self.watch.status()

    @property
    def _anchor_pending(self) -> bool:
        anchor = self._store.anchor if self._store is not None else None
        return anchor is not None and anchor.pending

    async def _flush_loop(self) -> None:
        if self._wake is None:
            raise RuntimeError("the flush loop runs only after start()")
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except StateError as exc:
                log.error("state store write failed (will retry): %s", exc)
                await asyncio.sleep(1.0)
                self._wake.set()
            except Exception:
                log.exception("state store write failed (will retry)")
                await asyncio.sleep(1.0)
                self._wake.set()


class _Progress:
    """How far one `_write_all` got (read back on the event loop after it returns or fails)."""

    def __init__(self, expect: AuditHead | None) -> None:
        self.writes = 0
        self.counters = False
        self.lost: list[AuditEvent] = []
        """`audit.unwritable` events of refused writes and counters, appended after the batch."""
        self.audit = Appended(expect)


def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None = None) -> None:
    for waiter in waiters:
        if waiter.done():  # its caller timed out
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def _flush_anchor(store: StateStore) -> None:
    if store.anchor is not None:
        store.anchor.flush()


def _state_error(exc: BaseException) -> StateError:
    if isinstance(exc, StateError):
        return exc
    return StateError(f"the audit log could not be written: {type(exc).__name__}")
