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
  written in batches by a flusher task; a failed batch stays queued and is retried.
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
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from flm_gateway.config import LoadedConfig
from flm_gateway.security.netset import NetworkMap
from flm_gateway.state import describe_store, open_store
from flm_gateway.state.rounds import PacedRounds
from flm_gateway.state.store import (
    AuditEvent,
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
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._was_usable = True

    # -- lifecycle ----------------------------------------------------------

    def open(self, loaded: LoadedConfig) -> None:
        """Open the store `loaded` names and load the view (blocking; before serving).

        Raises StateError. Reopening at another location is refused: moving state
        needs a restart.
        """
        location = describe_store(loaded)
        if self._store is not None and location != self.location:
            raise StateError(
                f"the state store moved from {self.location} to {location}; restart the "
                "gateway to use the new location"
            )
        self.refresh_interval = loaded.config.state.refresh_interval
        self.stale_after = max(loaded.config.state.stale_after, 2 * self.refresh_interval)
        if self._store is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flm-state")
        try:
            self._store = self._executor.submit(open_store, loaded).result(OPEN_TIMEOUT)
            read = next(self._reads)
            snapshot = self._executor.submit(self._read_snapshot).result(OPEN_TIMEOUT)
            self._apply_snapshot(snapshot, read)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor, self._store = None, None
            raise
        self.location = location
        log.info("state store: %s", location)

    def start(self) -> None:
        """Start the refresh and flush loops (call inside the running event loop)."""
        if self._tasks or self._store is None:
            return
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._tasks = [
            asyncio.create_task(self._refresh_loop(), name="flm-state-refresh"),
            asyncio.create_task(self._flush_loop(), name="flm-state-flush"),
        ]
        if self.pending or self._counters:
            self._wake.set()  # e.g. config.loaded, queued before the loop ran

    async def stop(self) -> None:
        """Flush what is queued, stop the loops and close the store."""
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
        """Queue an audit event."""
        self._audit.append(event)
        self._poke()

    def count(self, deltas: Mapping[str, int]) -> None:
        """Add to named counters (written in batches)."""
        for name, delta in deltas.items():
            self._counters[name] = self._counters.get(name, 0) + delta

    def block(self, record: BlockRecord) -> None:
        """Block `record.cidr` now (in memory) and persist it in the background."""
        self.view.blocks.add(record.cidr, record)
        self.submit(lambda store: store.put_block(record))

    def unblock(self, cidr: str) -> None:
        self.view.blocks.remove(cidr)
        self.submit(lambda store: store.remove_block(cidr))

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
        last_purge = time.monotonic()
        while True:
            await asyncio.sleep(self.refresh_interval)
            if self.pending or self._counters:
                self._poke()
            try:
                await self.refresh()
                if time.monotonic() - last_purge > PURGE_INTERVAL:
                    last_purge = time.monotonic()
                    await self.call(self._purge)
            except StateError as exc:
                log.error("state store refresh failed: %s", exc)
            except Exception:
                log.exception("state store refresh failed")

    # -- flush ------------------------------------------------------------------

    async def flush(self) -> None:
        """Write everything queued now; raises StateError (the batch stays queued)."""
        lock = self._flush_lock or asyncio.Lock()
        async with lock:
            writes, events, counters = self._writes, self._audit, self._counters
            if not (writes or events or counters):
                return
            self._writes, self._audit, self._counters = [], [], {}

            def write_all(store: StateStore) -> None:
                for write in writes:
                    write(store)
                store.append_audit(events)
                store.add_counters(counters)

            try:
                await self.call(write_all)
            except BaseException:
                # Keep order: the failed batch goes back in front of anything newer.
                self._writes = writes + self._writes
                self._audit = events + self._audit
                for name, delta in counters.items():
                    self._counters[name] = self._counters.get(name, 0) + delta
                raise
            self._last_ok = time.monotonic()

    def flush_sync(self) -> None:
        """`flush` for code outside the event loop (tests, shutdown paths)."""
        writes, events, counters = self._writes, self._audit, self._counters
        self._writes, self._audit, self._counters = [], [], {}

        def write_all(store: StateStore) -> None:
            for write in writes:
                write(store)
            store.append_audit(events)
            store.add_counters(counters)

        self.call_sync(write_all)

    async def _flush_loop(self) -> None:
        assert self._wake is not None  # set by start()
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
