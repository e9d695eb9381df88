"""Resuming a subscription: a channel's retained changes after an id, then live delivery, seamlessly."""

from __future__ import annotations

import asyncio
from typing import cast

from psycopg_pool import AsyncConnectionPool

from app import protocol
from app.protocol import Channel
from app.services.change_frames import Change, ChangeFramer
from app.services.changes import ChangeFeed, fetch_id
from app.services.coalesce import BatchedLookup, each_alone
from app.services.hub import Hub
from app.services.subscribers import Subscriber
from app.services.table_views import TableViews
from app.services.views import PLAIN

REPLAY = "SELECT * FROM fluxbase_realtime.table_changes_after(%s, %s, %s, %s, %s, %s)"
OLDEST = "SELECT fluxbase_realtime.oldest_retained_id()"
# Where the log starts and ends, for every replay starting meanwhile (one query, shared).
BOUNDS = (
    "SELECT fluxbase_realtime.oldest_retained_id(), "
    "(SELECT next_id - 1 FROM fluxbase_realtime.sequencer_state)"
)
# Ids are dense across all tables: one query looks at most this many ids, whatever the channel's share.
WINDOW = 20_000

ReplayRow = tuple[int, str, str, str, str | None, str | None, bool, int]
# A read of one channel's log: (schema, table, after id, up to id, at most this many changes) ...
ReadKey = tuple[str, str, int, int, int]
# ... and what it found: the changes, how far the read is complete, and the oldest id retained after it.
SharedRead = tuple[list[Change], int, int]


class Replayer:
    """Brings one subscriber's channel from `since` up to the live feed, then subscribes it live.

    The seam has no gap and no duplicate because the feed publishes in id order and `feed.last_id` only
    moves between awaits: the replay reads (cursor, feed.last_id] from the log, and the moment its cursor
    equals feed.last_id, with no await in between, the subscriber joins the hub for every later change.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        hub: Hub,
        feed: ChangeFeed,
        framer: ChangeFramer,
        views: TableViews,
        *,
        batch: int,
        batch_bytes: int,
        max_waiting: int = 10_000,
    ) -> None:
        # A reconnect storm resumes thousands of subscribers from the same few ids: replays starting
        # meanwhile share one look at the log's bounds, and replays reading the same range of a channel
        # share one read (app.services.coalesce), each answer fetched after it was asked for.
        self._bounds: BatchedLookup[None, tuple[int, int]] = BatchedLookup(
            self._fetch_bounds, max_waiting=max_waiting
        )
        self.reads: BatchedLookup[ReadKey, SharedRead] = BatchedLookup(
            self._fetch_reads, max_waiting=max_waiting
        )
        self._views = views
        self._pool = pool
        self._hub = hub
        self._feed = feed
        self._framer = framer
        self._batch = batch
        self._batch_bytes = batch_bytes
        # For /metrics: replays asked for (`since`), replay_gap errors sent, changes sent by replays.
        self.replays = 0
        self.replay_gaps = 0
        self.replayed_changes = 0

    async def replay(
        self, subscriber: Subscriber, channel: Channel, since: int, key: str | None = None
    ) -> None:
        """Replay what follows `since` (saying so when part of it is gone), then join live delivery."""
        self.replays += 1
        start = await self._starting_point(subscriber, channel.name, since)
        await self.join(subscriber, channel, start, key, gap_reported=start != since)

    async def join(
        self,
        subscriber: Subscriber,
        channel: Channel,
        cursor: int,
        key: str | None = None,
        *,
        gap_reported: bool = True,
    ) -> None:
        """Send the subscription's changes after `cursor` up to the live feed, then subscribe it live.
        `key`: the subscription (app.services.views.subscription_key; the channel's name by default),
        whose view filters and shapes what is replayed exactly as live delivery does.

        Returns without waiting when the feed is exactly at `cursor` (a plain subscribe, usually). Recent
        changes come from the feed's memory, without a query, so a join does not chase a busy feed.
        """
        name = key if key is not None else channel.name
        channel_name = channel.name
        batch = max(1, min(self._batch, subscriber.capacity // 2))
        me = asyncio.current_task()
        tracked = subscriber.replays.get(name) is me

        def wanted() -> bool:
            # Not left to cancellation alone: on Python 3.11 a cancel can be lost while waiting for a pool
            # connection (CPython gh-86296), so a replay checks it is still the one wanted after each await.
            if subscriber.closing or name not in subscriber.channels:
                return False
            return subscriber.replays.get(name) is me if tracked else True

        while True:
            # Caught up only when the feed has published everything up to the cursor (a client coming from
            # another instance may be ahead of this one's feed by a few changes).
            await self._feed.reached(cursor)
            if not wanted():
                return
            if self._feed.settled_at(cursor):
                self._hub.subscribe(subscriber, name)
                return
            upto = self._feed.last_id
            recent = self._feed.recent.after(cursor)
            if recent is not None and len(recent) <= subscriber.room:
                changes = [c for c in recent if c.channel == channel_name]
                next_cursor = upto
            else:
                await subscriber.wait_for_room(batch)
                if not wanted():
                    return
                changes, next_cursor, gap_reported = await self._read(
                    subscriber, channel, cursor, min(upto, cursor + WINDOW), batch, gap_reported
                )
            frames = await self._views.frames_for(
                changes, subscriber.audience, subscriber.views.get(name, PLAIN)
            )
            if not wanted():
                return
            for change in changes:
                frame = frames[change.id]
                if frame is not None:
                    self.replayed_changes += 1
                    self._hub.offer_to([subscriber], frame)
            cursor = next_cursor

    async def _read(
        self,
        subscriber: Subscriber,
        channel: Channel,
        cursor: int,
        upto: int,
        batch: int,
        gap_reported: bool,
    ) -> tuple[list[Change], int, bool]:
        """The channel's changes in (cursor, upto] from the log, how far that is complete, and whether a
        replay gap has been reported (it is, here, if the log was pruned past the cursor meanwhile)."""
        changes, read_to, oldest = await self.reads.get((channel.schema, channel.table, cursor, upto, batch))
        if oldest > cursor + 1 and not gap_reported:
            gap_reported = True
            self.replay_gaps += 1
            self._hub.offer_to([subscriber], _gap_error(channel.name, cursor, oldest))
        return changes, read_to, gap_reported

    async def _fetch_reads(self, keys: list[ReadKey]) -> dict[ReadKey, SharedRead | Exception]:
        """Each distinct range asked for, read once; a failed read fails the replays that asked for it."""
        return await each_alone(keys, lambda key: self._read_range(*key))

    async def _read_range(self, schema: str, table: str, cursor: int, upto: int, batch: int) -> SharedRead:
        async with self._pool.connection() as conn:
            result = await conn.execute(
                REPLAY, (schema, table, cursor, upto, batch, self._batch_bytes), prepare=False
            )
            rows = cast(list[ReplayRow], await result.fetchall())
            # Checked after the read: if nothing after the cursor was pruned by now, the read saw it all.
            oldest = await fetch_id(conn, OLDEST)
        changes = [self._framer.change(*row[:7]) for row in rows]
        return changes, (rows[-1][7] if rows else upto), oldest

    async def _fetch_bounds(self, _keys: list[None]) -> dict[None, tuple[int, int] | Exception]:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(BOUNDS)).fetchone()
        oldest, head = row if row else (0, 0)
        return {None: (int(oldest or 0), int(head or 0))}

    async def _starting_point(self, subscriber: Subscriber, name: str, since: int) -> int:
        """`since`, or where replay can start when the log no longer (or never) held what follows it."""
        oldest, head = await self._bounds.get(None)
        if since > head:
            self.replay_gaps += 1
            self._hub.offer_to(
                [subscriber],
                protocol.encode_error(
                    f"since {since} is newer than the newest change ({head}): this is not the database the "
                    "id came from, or it was restored; reload, then resume from the ids that follow",
                    channel=name,
                    code="replay_gap",
                ),
            )
            return head
        if oldest > since + 1:
            self.replay_gaps += 1
            self._hub.offer_to([subscriber], _gap_error(name, since, oldest))
            return oldest - 1
        return since


def _gap_error(channel: str, since: int, oldest: int) -> str:
    return protocol.encode_error(
        f"changes after {since} are no longer retained (the oldest retained id is {oldest}): reload, "
        "then continue from the changes that follow",
        channel=channel,
        code="replay_gap",
    )
