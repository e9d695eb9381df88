"""One replication stream's worth of the logical consumer: decoded messages into change log batches.

See app/services/logical_capture.py for the whole design: batches in commit order, the progress row in the
same transaction, the slot confirmed only once that transaction is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from app.services import pgoutput, row_literals
from app.services.logical_stream import ReplicationStream
from app.services.pacing import PassPacer

if TYPE_CHECKING:
    from app.services.logical_capture import LogicalCapture

PROGRESS = "SELECT commit_lsn::text, written, complete FROM fluxbase_realtime.logical_progress"
WRITE = "SELECT fluxbase_realtime.log_decoded_batch(%s::jsonb, %s::pg_lsn, %s, %s)"
COLUMNS = """
SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
FROM pg_attribute a
WHERE a.attrelid = fluxbase_realtime.find_table(%s, %s) AND a.attnum > 0 AND NOT a.attisdropped
"""
STATUS_INTERVAL = 5.0  # seconds between status updates to the server when nothing else prompts one
# A TRUNCATE of one partition, written into the WAL by its trigger (sql/realtime_tables.sql).
PARTITION_TRUNCATE = "fluxbase_realtime.partition_truncate"
# Anyone may write a message with that prefix: only a realtime partitioned table's channel gets it.
ROOT_STATUS = "SELECT fluxbase_realtime.table_status(%s, %s)"

log = logging.getLogger(__name__)


# Position in the batch, op, new row, old row; a source transaction's first change adds its COMMIT time
# (seconds since the epoch), for the feed's commit-to-send latency.
Change = tuple[int, str, str | None, str | None] | tuple[int, str, str | None, str | None, float]


class Batch:
    """Decoded changes not yet written, grouped by table: sent as one JSON text, [[schema, table,
    [[position, op, new row, old row], ...]], ...] (sql/logical_capture.sql: log_decoded_batch).
    `committed`: the COMMIT time of the transaction being read, until its first change takes it."""

    def __init__(self, committed: float | None = None) -> None:
        self.tables: dict[tuple[str, str], list[Change]] = {}
        self.count = 0
        self.size = 0
        self.committed = committed

    def add(self, relation: pgoutput.Relation, op: str, new: str | None, old: str | None) -> None:
        self._append((relation.schema, relation.name), op, new, old)

    def add_partition_truncate(self, root: tuple[str, str], partition: str) -> None:
        """A TRUNCATE on the root's channel whose record is the partition it names (JSON text)."""
        self._append(root, "TRUNCATE", partition, None)

    def _append(self, table: tuple[str, str], op: str, new: str | None, old: str | None) -> None:
        changes = self.tables.get(table)
        if changes is None:
            changes = self.tables[table] = []
        if self.committed is None:
            changes.append((self.count, op, new, old))
        else:
            changes.append((self.count, op, new, old, self.committed))
            self.committed = None
        self.count += 1
        self.size += len(new or "") + len(old or "") + 64

    def json(self) -> str:
        return orjson.dumps(
            [[schema, table, changes] for (schema, table), changes in self.tables.items()]
        ).decode()

    def __len__(self) -> int:
        return self.count


class StreamSession:
    """One stream's worth of state: relations seen, the transaction being read, the batch being built."""

    def __init__(
        self,
        capture: LogicalCapture,
        writer: psycopg.AsyncConnection[Any],
        stream: ReplicationStream,
        *,
        stop_at: int | None = None,
    ) -> None:
        self._capture = capture
        self._stop_at = stop_at  # return once everything up to here is written and confirmed
        self._writer = writer
        self._stream = stream
        self._relations: dict[int, tuple[pgoutput.Relation, tuple[int | None, ...]]] = {}
        # By relation: positions for insert_literal (None: the table's columns are the stream's, in order).
        self._insert_positions: dict[int, tuple[int | None, ...] | None] = {}
        self._batch = Batch()
        self._begin: pgoutput.Begin | None = None  # the transaction being read, between Begin and Commit
        self._position = 0  # changes of that transaction seen so far
        self._skip = 0  # how many of its first changes were already written (before a restart)
        # What the transaction's last change truncated (tables, partitions): a partition's TRUNCATE right
        # after one of its ancestor's is covered by it (sql/realtime_tables.sql).
        self._truncated: set[tuple[str, str]] = set()
        self._last_commit: pgoutput.Begin | None = None  # the last whole transaction in the batch
        self._last_commit_count = 0
        self._received_end = 0  # end LSN of the last Commit read (its changes are written or in the batch)
        self._confirmed = 0
        self._pending: asyncio.Future[Any] | None = None  # the batch being written
        self._pending_changes = 0
        self._pending_end = 0  # what may be confirmed once it has committed
        # (WAL insert position after a write committed, the source position it makes confirmable once the
        # WAL is flushed past it): see _confirm_durable.
        self._durable_after: tuple[int, int] | None = None
        self._status_due = time.monotonic() + STATUS_INTERVAL

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._pending is not None:
                self._pending.cancel()

    async def _run(self) -> None:
        row = await (await self._writer.execute(PROGRESS)).fetchone()
        assert row is not None
        self._written_lsn, self._written_count, self._written_complete = (
            pgoutput.parse_lsn(row[0]),
            int(row[1]),
            bool(row[2]),
        )
        loop = asyncio.get_running_loop()
        pacer = PassPacer(self._capture._busy_interval)
        write_not_before = 0.0
        while True:
            message = self._stream.poll()
            if message is None and self._batch and loop.time() < write_not_before:
                # Under sustained writes: gather a batch for a little while rather than commit per change.
                message = await self._stream.read(wait=write_not_before - loop.time())
                if message is None:
                    continue
            if message is None:
                # Nothing more has arrived: write what is read, so a change waits for no batch to fill.
                started = loop.time()
                wrote = bool(self._batch)
                await self._write()
                if self._stop_at is not None and self._confirmed >= self._stop_at:
                    return
                message = self._stream.poll()
                if wrote:
                    pause = pacer.pause_after(started, loop.time(), more_arrived=message is not None)
                    write_not_before = loop.time() + pause
            if message is None:
                await self._send_status_if_due()
                message = await self._stream.read(wait=STATUS_INTERVAL)
                if message is None:
                    continue
            if isinstance(message, pgoutput.Keepalive):
                if self._begin is None and not self._batch:
                    # Everything sent before this keepalive is written: the slot may move up to it.
                    self._received_end = max(self._received_end, message.wal_end)
                if message.reply_requested:
                    self._status_due = 0
                continue
            payload = message.payload
            if payload[:1] == b"I" and self._begin is not None:  # nearly every message: the fast path
                if not self._next_change():
                    continue
                oid = int.from_bytes(payload[1:5])
                literal = row_literals.insert_literal(payload, self._insert_positions[oid])[1]
                self._batch.add(self._relations[oid][0], "INSERT", literal, None)
            else:
                await self._handle(pgoutput.parse_message(payload))
            if (
                len(self._batch) >= self._capture._batch_size
                or self._batch.size >= self._capture._batch_bytes
            ):
                await self._write(wait=False)  # written while the next batch is decoded

    def _next_change(self) -> bool:
        """A row change of the transaction being read: counted; False when it was written before a
        restart (or the transaction is skipped whole)."""
        self._position += 1
        if self._truncated:
            self._truncated.clear()  # a partition's TRUNCATE is covered only right after its ancestor's
        return self._skip != -1 and self._position > self._skip

    async def _handle(self, message: pgoutput.Message) -> None:
        if isinstance(message, pgoutput.Insert | pgoutput.Update | pgoutput.Delete):  # nearly every message
            if self._next_change():
                self._add(message)
        elif isinstance(message, pgoutput.Begin):
            self._begin, self._position = message, 0
            self._truncated.clear()
            if self._capture.behind_since is None:
                self._capture.behind_since = message.committed_at
            if message.final_lsn < self._written_lsn or (
                message.final_lsn == self._written_lsn and self._written_complete
            ):
                self._skip = -1  # written whole before a restart
            elif message.final_lsn == self._written_lsn:
                self._skip = self._written_count
            else:
                self._skip = 0
            # Its first change carries the COMMIT time, unless that change was written before a restart.
            self._batch.committed = message.committed_at.timestamp() if self._skip == 0 else None
        elif isinstance(message, pgoutput.Commit):
            if self._begin is not None and self._skip != -1:
                self._last_commit, self._last_commit_count = self._begin, self._position
            self._begin = None
            self._batch.committed = None
            self._received_end = message.end_lsn
        elif isinstance(message, pgoutput.Relation):
            positions = await self._positions(message)
            self._relations[message.oid] = (message, positions)
            in_order = positions == tuple(range(len(message.columns)))
            self._insert_positions[message.oid] = None if in_order else positions
        elif isinstance(message, pgoutput.Truncate):
            # One change per table it truncated, without a record, as the trigger mode logs it.
            self._truncated.clear()
            for oid in message.relation_oids:
                self._position += 1
                if oid in self._relations:
                    relation = self._relations[oid][0]
                    self._truncated.add((relation.schema, relation.name))
                    if self._skip != -1 and self._position > self._skip:
                        self._batch.add(relation, "TRUNCATE", None, None)
        elif isinstance(message, pgoutput.LogicalMessage):
            if message.transactional and message.prefix == PARTITION_TRUNCATE and self._begin is not None:
                await self._partition_truncated(message.content)

    async def _partition_truncated(self, content: bytes) -> None:
        try:
            body = orjson.loads(content)
            root = (str(body["root"][0]), str(body["root"][1]))
            partition = (str(body["partition"]["schema"]), str(body["partition"]["table"]))
            ancestors = {(str(a[0]), str(a[1])) for a in body["ancestors"]}
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            log.warning("logical_message_invalid prefix=%s: ignored", PARTITION_TRUNCATE)
            return
        covered = not self._truncated.isdisjoint(ancestors | {root})
        self._truncated.add(partition)
        if covered:
            return
        # Counted whether or not it is logged: positions must be the same when sent again after a restart.
        self._position += 1
        if self._skip == -1 or self._position <= self._skip:
            return
        row = await (await self._writer.execute(ROOT_STATUS, root)).fetchone()
        if row is None or row[0] != "enabled":
            log.warning("logical_message_ignored prefix=%s: not a realtime table", PARTITION_TRUNCATE)
            return
        text = orjson.dumps({"schema": partition[0], "table": partition[1]}).decode()
        self._batch.add_partition_truncate(root, text)

    def _add(self, message: pgoutput.Insert | pgoutput.Update | pgoutput.Delete) -> None:
        relation, positions = self._relations[message.relation_oid]
        if isinstance(message, pgoutput.Insert):
            self._batch.add(relation, "INSERT", row_literals.row_literal(message.new, positions), None)
        elif isinstance(message, pgoutput.Update):
            old = message.old
            new = row_literals.fill_unchanged(message.new, None if message.old_is_key else old)
            old_literal = row_literals.row_literal(old, positions) if old is not None else None
            self._batch.add(relation, "UPDATE", row_literals.row_literal(new, positions), old_literal)
        else:
            self._batch.add(relation, "DELETE", None, row_literals.row_literal(message.old, positions))

    async def _positions(self, relation: pgoutput.Relation) -> tuple[int | None, ...]:
        """For each of the table's current columns, its index in the stream's rows (by name)."""
        row = await (await self._writer.execute(COLUMNS, (relation.schema, relation.name))).fetchone()
        names = list(row[0]) if row else []
        streamed = {column.name: index for index, column in enumerate(relation.columns)}
        if not names:  # dropped since: keep the stream order; the log gets the text (sql/logical_capture.sql)
            return tuple(range(len(relation.columns)))
        return tuple(streamed.get(name) for name in names)

    async def _write(self, *, wait: bool = True) -> None:
        """Write the batch (one transaction), then confirm the last whole transaction it completed.

        With `wait=False` (a full batch in the middle of a burst) the write runs while the next batch is
        decoded; at most one is in flight, and nothing is confirmed before its write has committed.
        """
        if self._batch:
            if self._begin is not None and self._skip != -1:
                lsn, written, complete = self._begin.final_lsn, self._position, False
            else:
                assert self._last_commit is not None
                lsn, written, complete = self._last_commit.final_lsn, self._last_commit_count, True
            await self._finish_pending()
            # The transaction being read may not have reached its first change yet.
            batch, self._batch = self._batch, Batch(self._batch.committed)
            self._pending = asyncio.ensure_future(
                self._writer.execute(
                    WRITE,
                    (batch.json(), pgoutput.lsn_text(lsn), written, complete),
                    prepare=True,
                )
            )
            self._pending_changes = len(batch)
            self._pending_end = self._received_end
            self._written_lsn, self._written_count, self._written_complete = lsn, written, complete
        else:
            self._pending_end = max(self._pending_end, self._received_end)
        if wait:
            await self._finish_pending()

    async def _finish_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
            self._capture.changes_written += self._pending_changes
            self._pending_changes = 0
            self._capture._on_written()
        if self._pending_end > self._confirmed:
            await self._confirm_durable()

    async def _confirm_durable(self) -> None:
        """Confirm to the slot what the log holds durably.

        The consumer commits with synchronous_commit=off: a commit does not wait for its WAL flush, which
        takes a flush off every change's way to its subscribers. That is safe for them, because a change is
        only delivered once a sequencer pass has numbered it, and the pass's own (synchronous) commit comes
        later in the WAL, so its flush includes the consumer's commit. The slot is the one thing that must
        not run ahead: a position is confirmed only once the WAL is flushed past an insert position read
        after the write committed (two checks apart). A drain (synchronous commits) confirms at once.
        """
        if self._stop_at is not None:
            self._set_confirmed(self._pending_end)
            await self._send_status()
            return
        row = await (
            await self._writer.execute(
                "SELECT pg_current_wal_flush_lsn()::text, pg_current_wal_insert_lsn()::text"
            )
        ).fetchone()
        assert row is not None
        flushed, inserted = pgoutput.parse_lsn(row[0]), pgoutput.parse_lsn(row[1])
        if self._durable_after is not None and flushed >= self._durable_after[0]:
            self._set_confirmed(self._durable_after[1])
            await self._send_status()
        if self._pending_end > self._confirmed:
            self._durable_after = (inserted, self._pending_end)
        else:
            self._durable_after = None

    def _set_confirmed(self, position: int) -> None:
        self._confirmed = max(self._confirmed, position)
        if self._begin is None and self._confirmed >= self._received_end:
            self._capture.behind_since = None

    async def _send_status_if_due(self) -> None:
        if time.monotonic() >= self._status_due:
            if self._pending_end > self._confirmed:
                await self._confirm_durable()
            await self._send_status()

    async def _send_status(self) -> None:
        await self._stream.send_status(self._confirmed, now=datetime.now(UTC))
        self._status_due = time.monotonic() + STATUS_INTERVAL
