"""The change feed: numbers committed changes, reads them from the log in order, frames each once
(app.services.change_frames)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from psycopg import AsyncConnection, AsyncCursor
from psycopg_pool import AsyncConnectionPool

from app.services.change_frames import Change, ChangeFramer, RecentChanges
from app.services.coalesce import BatchedLookup
from app.services.histogram import Histogram
from app.services.pacing import PassPacer
from app.services.sessions import KEEPALIVES

log = logging.getLogger(__name__)

SEQUENCE = "SELECT fluxbase_realtime.sequence_commits()"
READ = "SELECT * FROM fluxbase_realtime.read_log(%s, %s, %s)"
WAKE = "SELECT * FROM fluxbase_realtime.sequence_and_read_log(%s, %s, %s, %s::interval)"
# Every session of the service (the pool's, the feed's). JIT compiles a plan whose estimated cost is high,
# whatever it really costs: 114 ms was measured for a query that ran in under one. Every query the service
# runs is short.
SESSION_OPTIONS = "-c jit=off"
# The feed's session also runs generic plans: the read is prepared, but left to choose, PostgreSQL plans it
# anew at every execution once the log is large (a generic range over `commits` is estimated at thousands
# of rows, so the custom plan always looks cheaper): with 1.1M logged changes, 0.53 ms a read instead of
# 0.15. Its generic plan is index probes whatever the values (tests/integration/test_log_reads.py), as are
# the sequencer pass's (sql/sequencer.sql).
FEED_SESSION_OPTIONS = f"{SESSION_OPTIONS} -c plan_cache_mode=force_generic_plan"


def _interval(seconds: float | None) -> dt.timedelta | None:
    return None if seconds is None else dt.timedelta(seconds=seconds)


async def fetch_id(conn: AsyncConnection[Any], query: str) -> int:
    """The single bigint a query returns (0 for NULL or no row)."""
    row = await (await conn.execute(query)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# A row of read_log(): a change, then its commit's COMMIT time (seconds since the epoch) on the commit's
# first change only, None on the others and where the database does not record it (sql/sequencer.sql).
ChangeRow = tuple[int, str, str, str, str | None, str | None, bool, float | None]
# Per change id: what publish needs to give each subscriber group its own frame (absent: the shared one).
Authorize = Callable[[Sequence[Change]], Awaitable[Mapping[int, Any]]]


class ChangeFeed:
    """Delivers every committed change exactly once, in id order, to `publish`.

    Woken by the listener (a NOTIFY, or a reconnect), by the idle poll interval, or on its own schedule
    while it polls under load (PassPacer), it runs a sequencer pass and then reads the log after the last
    id it delivered. It never depends on a notification's content, so a notification lost
    while the listener was down costs latency, not data: the next wake-up reads everything since.
    `last_id` only moves between awaits, after the change it names was published: replays rely on that.
    Before a batch is published, `authorize` gives the frames of its changes that differ by subscriber
    group (row-level security, row filters, events, columns: app.services.table_views); `settled_at`
    tells a joining subscriber when no batch is between read and published.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        conninfo: str,
        framer: ChangeFramer,
        publish: Callable[[Sequence[Change], Mapping[int, Any]], None],
        *,
        authorize: Authorize,
        wait_for_room: Callable[[Sequence[Change], Mapping[int, Any]], Awaitable[None]],
        batch_size: int,
        batch_bytes: int,
        busy_interval: float = 0.0,
        poll_grace: float = 0.0,
        idle_poll_interval: float | None = None,
        on_gap: Callable[[int, int], None] | None = None,
        max_waiting: int = 10_000,
    ) -> None:
        self._pool = pool
        # The passes subscribes ask for, shared (sequence()).
        self.shared_passes: BatchedLookup[None, int] = BatchedLookup(
            self._shared_pass, max_waiting=max_waiting
        )
        self._conninfo = conninfo
        # The feed's own connection, opened on first use and after a failure: a wake-up is on the latency
        # path, and taking a pooled connection and giving it back cost ~0.15 ms of the ~1 ms per wake-up.
        self._conn: AsyncConnection[Any] | None = None
        self._framer = framer
        self._publish = publish
        self._authorize = authorize
        self._wait_for_room = wait_for_room
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._busy_interval = busy_interval
        self._poll_grace = poll_grace
        # A pass at least this often, woken or not: the bound on how long a change whose writer skipped
        # NOTIFY can wait (sql/capture.sql). None: only when woken.
        self._idle_poll_interval = idle_poll_interval
        self._lease: float | None = None  # polling: the lease the next pass takes when it finds changes
        # Whether the feed is polling under load (writers may skip NOTIFY meanwhile): for stats and tests.
        self.polling = False
        # Told (after_id, head) when ids were numbered that the log no longer holds: changes a subscriber
        # will never get (pruned before they were read, or lost with a logical slot).
        self._on_gap = on_gap
        self._wakeup = asyncio.Event()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.last_id = 0
        # The end of the batch read but not yet published (== last_id when none is).
        self.reading_to = 0
        self.recent = RecentChanges()
        # For /metrics: the newest id a pass numbered (the head of the log as the feed last saw it), the
        # passes run (the feed's own and subscribes'), failed wake-ups, the time a wake-up's statement
        # takes, and how long a change waits between the read that found it and its publication.
        self.head_id = 0
        self.passes = 0
        self.failures = 0
        self.pass_seconds = Histogram()
        self.read_to_publish_seconds = Histogram()
        # From each commit's COMMIT (the database's clock) to its first change's publication (this
        # host's): one observation per commit, never negative (clocks of two hosts may disagree).
        self.commit_to_publish_seconds = Histogram()

    async def start_at_head(self) -> None:
        """Begin after the newest change: a fresh service delivers what commits from now on."""
        self.last_id = self.reading_to = self.head_id = await self.sequence()

    def wake(self) -> None:
        self._wakeup.set()

    async def sequence(self) -> int:
        """Number everything committed so far and return the newest id: the position of "now".

        Callers share passes (a connect storm asks thousands of times a second, and passes take turns on
        the sequencer's lock): each gets the head of a pass that started after it asked, which is all
        "now" promises (app.services.coalesce). Raises Busy past `max_waiting` callers."""
        return await self.shared_passes.get(None)

    async def _shared_pass(self, _callers: list[None]) -> dict[None, int | Exception]:
        async with self._pool.connection() as conn:
            head = await fetch_id(conn, SEQUENCE)
        self.passes += 1
        self.head_id = max(self.head_id, head)
        if head > self.last_id:
            self.wake()
        return {None: head}

    def settled_at(self, change_id: int) -> bool:
        """Everything up to `change_id`, and nothing after it, has been published, and no batch is in
        flight: a subscriber that has everything up to `change_id` can join live delivery now."""
        return self.last_id == change_id == self.reading_to

    async def reached(self, change_id: int) -> None:
        """Return once every change up to `change_id` (and any batch in flight) has been published."""
        change_id = max(change_id, self.reading_to)
        if self.last_id >= change_id:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((change_id, waiter))
        self.wake()
        await waiter

    async def run(self) -> None:
        failures = 0
        pacer = PassPacer(self._busy_interval, grace=self._poll_grace)
        loop = asyncio.get_running_loop()
        while True:
            if not pacer.polling:
                await self._woken(loop)
            self._wakeup.clear()
            started = loop.time()
            seen = self.last_id
            self._lease = pacer.lease
            try:
                await self._catch_up()
                failures = 0
                pause = pacer.pause_after(
                    started, loop.time(), more_arrived=self._wakeup.is_set(), found_new=self.last_id > seen
                )
                self.polling = pacer.polling
                if pause > 0:
                    await asyncio.sleep(pause)
            except Exception:
                failures += 1
                self.failures += 1
                delay = min(5.0, 0.05 * 2**failures) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                log.exception("change_feed_failed attempt=%d retry_in=%.2fs", failures, delay)
                await asyncio.sleep(delay)
                self._wakeup.set()

    async def _woken(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until a wake-up, or the idle poll interval has passed."""
        if self._idle_poll_interval is None:
            await self._wakeup.wait()
            return
        timer = loop.call_later(self._idle_poll_interval, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            timer.cancel()

    async def _connection(self) -> AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                application_name="fluxbase-realtime-feed",
                options=FEED_SESSION_OPTIONS,
                **KEEPALIVES,
            )
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _catch_up(self) -> None:
        conn = await self._connection()
        clock = asyncio.get_running_loop().time
        try:
            # The sequencer pass and the first read in one statement: one round trip per wake-up, and
            # cheaper than the two in a pipeline (sql/sequencer.sql). When nothing is there
            # to read, its one row carries only the head.
            started = clock()
            woken = await (
                await conn.execute(
                    WAKE,
                    (self.last_id, self._batch_size, self._batch_bytes, _interval(self._lease)),
                    prepare=True,
                )
            ).fetchall()
            read_at = clock()
            self.passes += 1
            self.pass_seconds.observe(read_at - started)
            head = int(woken[0][0])
            self.head_id = max(self.head_id, head)
            rows = [row[1:] for row in woken if row[1] is not None]
            while self.last_id < head:
                if not rows:
                    rows = await (await self._read(conn)).fetchall()
                    read_at = clock()
                if not rows:
                    log.error("change_log_gap after_id=%d head=%d", self.last_id, head)
                    gap_after = self.last_id
                    self.last_id = self.reading_to = head
                    self.recent.clear()
                    if self._on_gap is not None:
                        self._on_gap(gap_after, head)
                    break
                batch = cast(list[ChangeRow], rows)
                await self._deliver([self._framer.change(*r) for r in batch])
                # Authorization (RLS) and waiting for room in full queues are what a change waits for here.
                self.read_to_publish_seconds.observe(clock() - read_at, len(rows))
                self._observe_commits(batch)
                rows = []
        except BaseException:
            await self.close()  # whatever state it is in, the next pass starts on a fresh connection
            raise
        self._release_waiters()

    def _observe_commits(self, batch: list[ChangeRow]) -> None:
        """Commit-to-send latency of the commits whose first change this batch published."""
        published = time.time()  # wall clock, like the database's commit timestamps
        histogram = self.commit_to_publish_seconds
        for row in batch:
            committed = row[7]
            if committed is not None:
                histogram.observe(max(0.0, published - committed))

    def _read(self, conn: AsyncConnection[Any]) -> Awaitable[AsyncCursor[Any]]:
        # Prepared: planning the inlined function took 0.4 ms against 0.1 ms to run it. Its join is a nested
        # loop of index scans whatever the ids (sql/sequencer.sql: read_log), so its generic plan, which
        # the feed's session always uses (FEED_SESSION_OPTIONS), is as good as a custom one.
        return conn.execute(READ, (self.last_id, self._batch_size, self._batch_bytes), prepare=True)

    async def _deliver(self, changes: list[Change]) -> None:
        self.reading_to = changes[-1].id
        try:
            per_group = await self._authorize(changes)
            await self._wait_for_room(changes, per_group)
        except BaseException:
            self.reading_to = self.last_id
            raise
        self._publish(changes, per_group)
        for change in changes:
            self.recent.add(change)
        self.last_id = changes[-1].id
        self._release_waiters()

    def _release_waiters(self) -> None:
        if self._waiters:
            ready = [w for w in self._waiters if w[0] <= self.last_id]
            self._waiters = [w for w in self._waiters if w[0] > self.last_id]
            for _, waiter in ready:
                if not waiter.done():
                    waiter.set_result(None)
