"""Logical capture: one consumer among all instances streams the slot and writes the change log.

The consumer holds a session advisory lock on its own connection, and writes every batch on that same
connection: if the process dies, the lock goes with its session, and another instance (retrying every
`takeover_interval`) takes over. Each batch is one statement, `log_decoded_batch`, one transaction: the
changes (in commit order, `ord` = position in the batch), the progress row (the source transaction's
commit LSN and how many of its changes are written) and one NOTIFY. Only once it is durable is the slot
told it may release the WAL (the end of the last whole transaction written). Sent again after a crash, a
transaction is skipped as far as the progress row says it was written: nothing lost, nothing twice.
A large transaction is written in batches of `batch_size` changes, so memory stays bounded. The stream's
state and the batching are app/services/logical_session.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from app.services import pgoutput
from app.services.logical_session import StreamSession
from app.services.logical_stream import ReplicationStream, StreamError
from app.services.replication_slot import SlotError, replace_lost_slot, slot_state
from app.services.sessions import KEEPALIVES

log = logging.getLogger(__name__)

LOCK = "SELECT pg_try_advisory_lock(hashtext('fluxbase_realtime.logical_consumer'))"


class LogicalCapture:
    """Runs forever: wins the consumer lock (or waits for it), then streams the slot into the change log."""

    def __init__(
        self,
        conninfo: str,
        *,
        slot: str,
        publication: str,
        batch_size: int,
        batch_bytes: int,
        takeover_interval: float,
        on_written: Callable[[], None],
        busy_interval: float = 0.0,
    ) -> None:
        self._conninfo = conninfo
        self._slot = slot
        self._publication = publication
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._takeover_interval = takeover_interval
        # Least seconds between the consumer's batch writes under sustained traffic; none by default: its
        # commits do not wait for a WAL flush (synchronous_commit=off), so holding a change back saves
        # nothing, and it cost 10 ms of p50 at 200 changes/s (docs/benchmarks.md, capture modes).
        self._busy_interval = busy_interval
        self._on_written = on_written
        self.leading = False
        self.changes_written = 0
        # The commit time of the oldest transaction received but not yet confirmed (None: none is).
        self.behind_since: datetime | None = None

    @property
    def lag_seconds(self) -> float | None:
        if not self.leading:
            return None
        behind = self.behind_since
        return 0.0 if behind is None else max(0.0, (datetime.now(UTC) - behind).total_seconds())

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name="fluxbase-realtime-consumer",
                    # Its commits need not wait for their WAL flush (see _Session._confirm_durable).
                    options="-c synchronous_commit=off",
                    **KEEPALIVES,
                ) as writer:
                    await self._become_consumer(writer)
                    self.leading = True
                    log.info("logical_consumer_leading slot=%s", self._slot)
                    failures = 0
                    await self._consume(writer)
            except (psycopg.Error, OSError, pgoutput.ProtocolError) as error:
                failures += 1
                delay = min(5.0, 0.05 * 2**failures) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                log.warning("logical_consumer_failed error=%r retry_in=%.2fs", str(error)[:300], delay)
                await asyncio.sleep(delay)
            finally:
                self.leading = False
                self.behind_since = None

    async def _become_consumer(self, writer: psycopg.AsyncConnection[Any]) -> None:
        """Return once this session holds the consumer lock (polled: a dead holder's session ends, and
        PostgreSQL releases its lock, within moments of the process dying)."""
        while True:
            row = await (await writer.execute(LOCK)).fetchone()
            if row is not None and row[0]:
                return
            await asyncio.sleep(self._takeover_interval)

    async def drain(self, until_lsn: int) -> None:
        """Write the slot's changes up to `until_lsn` into the log, then return (the switch back to
        triggers: see replication_slot.prepare_capture). Raises SlotError when that cannot be done."""
        async with await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, application_name="fluxbase-realtime-consumer"
        ) as writer:
            row = await (await writer.execute(LOCK)).fetchone()
            if not (row and row[0]):
                raise SlotError(
                    f"slot {self._slot} is being consumed by an instance in logical mode: stop every "
                    "instance in logical mode before starting one with REALTIME_CAPTURE=trigger"
                )
            stream = await self._open(writer, replace_lost=False)
            if stream is None:
                return
            try:
                await StreamSession(self, writer, stream, stop_at=until_lsn).run()
            finally:
                await stream.close()

    async def _open(
        self, writer: psycopg.AsyncConnection[Any], *, replace_lost: bool = True
    ) -> ReplicationStream | None:
        while True:
            try:
                return await ReplicationStream.open(self._conninfo, self._slot, self._publication)
            except StreamError as error:
                if error.code == "55006":  # still active: the previous consumer's walsender is exiting
                    await asyncio.sleep(min(self._takeover_interval, 0.2))
                    continue
                if error.code not in ("42704", "55000"):  # undefined_object, object_not_in_prerequisite_state
                    raise
                state = await slot_state(writer, self._slot)
                if state.usable:
                    raise
                if not replace_lost:
                    return None
                await replace_lost_slot(writer, self._slot, state)

    async def _consume(self, writer: psycopg.AsyncConnection[Any]) -> None:
        stream = await self._open(writer)
        assert stream is not None
        try:
            await StreamSession(self, writer, stream).run()
        finally:
            await stream.close()
