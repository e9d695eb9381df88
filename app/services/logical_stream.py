"""A replication connection streaming one logical slot with pgoutput, on asyncio.

psycopg 3 has no replication API (psycopg/psycopg#71), but its libpq binding (`psycopg.pq`) exposes the
calls a COPY BOTH stream needs: `send_query` for START_REPLICATION, `get_copy_data` / `put_copy_data` /
`flush`, and the socket to wait on. The bytes are read by app/services/pgoutput.py. Why this and not
psycopg2's LogicalReplicationConnection: see docs/design.md (Capture modes).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import psycopg
from psycopg import pq

from app.services import pgoutput
from app.services.sessions import KEEPALIVES

# Slot names may hold lowercase letters, digits and underscores (PostgreSQL's own rule); publication
# names are held to the same here, so both can be written into START_REPLICATION without quoting games.
REPLICATION_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class StreamError(psycopg.OperationalError):
    """START_REPLICATION failed or the stream ended; `sqlstate` says why when the server said so."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.code = sqlstate


class ReplicationStream:
    """One START_REPLICATION ... LOGICAL stream. Messages are read one at a time, so a slow writer of the
    change log holds the stream back (TCP flow control) rather than buffering it in memory."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self._pgconn = conn.pgconn
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, conninfo: str, slot: str, publication: str) -> ReplicationStream:
        for name in (slot, publication):
            if not REPLICATION_NAME.fullmatch(name):
                raise ValueError(f"not a valid slot or publication name: {name!r}")
        conn = await psycopg.AsyncConnection.connect(
            conninfo,
            autocommit=True,
            replication="database",
            application_name="fluxbase-realtime-logical",
            **KEEPALIVES,
        )
        stream = cls(conn)
        try:
            await stream._start(slot, publication)
        except BaseException:
            await conn.close()
            raise
        return stream

    async def _start(self, slot: str, publication: str) -> None:
        # 0/0: from the slot's confirmed position. Protocol 1: whole transactions, sent after they commit.
        # Messages: a TRUNCATE of one partition travels as one (sql/realtime_tables.sql).
        options = f"proto_version '1', publication_names '{publication}', messages 'true'"
        command = f"START_REPLICATION SLOT {slot} LOGICAL 0/0 ({options})"
        self._pgconn.send_query(command.encode())
        await self._flush()
        while True:
            self._pgconn.consume_input()
            if not self._pgconn.is_busy():
                break
            await self._readable(None)
        result = self._pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            message = (result.error_message if result is not None else self._pgconn.error_message) or b""
            sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) if result is not None else None
            raise StreamError(
                message.decode(errors="replace").strip() or "START_REPLICATION failed",
                sqlstate.decode() if sqlstate else None,
            )

    def poll(self) -> pgoutput.XLogData | pgoutput.Keepalive | None:
        """The next message if one is already received, else None (never waits)."""
        nbytes, data = self._pgconn.get_copy_data(1)
        if nbytes > 0:
            return pgoutput.parse_stream_message(bytes(data))
        if nbytes == 0:
            self._pgconn.consume_input()
            nbytes, data = self._pgconn.get_copy_data(1)
            if nbytes > 0:
                return pgoutput.parse_stream_message(bytes(data))
            if nbytes == 0:
                return None
        raise self._ended()

    async def read(self, wait: float) -> pgoutput.XLogData | pgoutput.Keepalive | None:
        """The next message, waiting at most `wait` seconds (None: nothing came)."""
        message = self.poll()
        if message is None and await self._readable(wait):
            message = self.poll()
        return message

    async def send_status(self, confirmed: int, *, now: Any) -> None:
        """Tell the server everything up to `confirmed` is stored: the slot may release that WAL."""
        self._pgconn.put_copy_data(pgoutput.standby_status(confirmed, confirmed, confirmed, now))
        await self._flush()

    async def close(self) -> None:
        await self._conn.close()

    def _ended(self) -> StreamError:
        result = self._pgconn.get_result()
        message = (result.error_message if result is not None else b"") or self._pgconn.error_message or b""
        sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE) if result is not None else None
        return StreamError(
            message.decode(errors="replace").strip() or "the replication stream ended",
            sqlstate.decode() if sqlstate else None,
        )

    async def _flush(self) -> None:
        while self._pgconn.flush() == 1:
            await self._wait(writable=True, wait=None)

    async def _readable(self, wait: float | None) -> bool:
        return await self._wait(writable=False, wait=wait)

    async def _wait(self, *, writable: bool, wait: float | None) -> bool:
        fd = self._pgconn.socket
        ready: asyncio.Future[None] = self._loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if writable:
            self._loop.add_writer(fd, wake)
        else:
            self._loop.add_reader(fd, wake)
        try:
            await asyncio.wait_for(ready, wait)
            return True
        except TimeoutError:
            return False
        finally:
            if writable:
                self._loop.remove_writer(fd)
            else:
                self._loop.remove_reader(fd)
