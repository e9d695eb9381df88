"""The change feed: numbers committed changes, reads them from the log in order, frames each once."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from psycopg_pool import AsyncConnectionPool

from app.protocol import BroadcastEncoder, Operation, TableChannel

log = logging.getLogger(__name__)

SEQUENCE = "SELECT fluxbase_realtime.sequence_commits()"
READ = "SELECT * FROM fluxbase_realtime.changes_after(%s, %s, %s)"


@dataclass(frozen=True, slots=True)
class Change:
    """One committed row change, framed for the wire."""

    id: int
    channel: str
    frame: str


ChangeRow = tuple[int, str, str, str, str | None, str | None]


class ChangeFeed:
    """Delivers every committed change exactly once, in id order, to `publish`.

    Woken by the listener (a NOTIFY, or a reconnect), it runs a sequencer pass and then reads the log
    after the last id it delivered. It never depends on a notification's content, so a notification lost
    while the listener was down costs latency, not data: the next wake-up reads everything since.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        publish: Callable[[Change], None],
        *,
        wait_for_room: Callable[[int], Awaitable[None]],
        batch_size: int,
        batch_bytes: int,
    ) -> None:
        self._pool = pool
        self._publish = publish
        self._wait_for_room = wait_for_room
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._wakeup = asyncio.Event()
        self._encoders: dict[tuple[str, str], tuple[str, BroadcastEncoder]] = {}
        self.last_id = 0

    async def start_at_head(self) -> None:
        """Begin after the newest change: a fresh service delivers what commits from now on."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SEQUENCE)).fetchone()
        self.last_id = int(row[0]) if row else 0

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        failures = 0
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._catch_up()
                failures = 0
            except Exception:
                failures += 1
                delay = min(5.0, 0.05 * 2**failures) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                log.exception("change_feed_failed attempt=%d retry_in=%.2fs", failures, delay)
                await asyncio.sleep(delay)
                self._wakeup.set()

    async def _catch_up(self) -> None:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(SEQUENCE)).fetchone()
            head = int(row[0]) if row else 0
            while self.last_id < head:
                cursor = await conn.execute(READ, (self.last_id, self._batch_size, self._batch_bytes))
                rows = cast(list[ChangeRow], await cursor.fetchall())
                if not rows:
                    log.error("change_log_gap after_id=%d head=%d", self.last_id, head)
                    self.last_id = head
                    break
                await self._wait_for_room(len(rows))
                for change_id, schema, table, op, record, old_record in rows:
                    self._publish(
                        self._frame(change_id, schema, table, cast(Operation, op), record, old_record)
                    )
                    self.last_id = change_id

    def _frame(
        self,
        change_id: int,
        schema: str,
        table: str,
        op: Operation,
        record: str | None,
        old_record: str | None,
    ) -> Change:
        known = self._encoders.get((schema, table))
        if known is None:
            channel = TableChannel(schema, table)
            known = self._encoders[(schema, table)] = (channel.name, BroadcastEncoder(channel))
        channel_name, encoder = known
        return Change(change_id, channel_name, encoder.encode(change_id, op, record, old_record))
