"""Helpers of the Python client's integration tests: a continuous writer, a collector, a test client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from fluxbase_realtime_client import Backoff, Change, RealtimeClient

# Bounds against hanging, never measurements of speed.
WAIT = 60.0
SENTINEL = "end"
# The heartbeat of the servers these tests start as processes, and of the project's shared server.
HEARTBEAT = 0.2
SHARED_SERVER_HEARTBEAT = 30.0


def server_env(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "warning",
        "REALTIME_HEARTBEAT_INTERVAL": str(HEARTBEAT),
    }


def make_client(
    url: str, heartbeat_interval: float = SHARED_SERVER_HEARTBEAT, **options: Any
) -> RealtimeClient:
    return RealtimeClient(
        url,
        backoff=Backoff(base=0.05, cap=0.5),
        heartbeat_interval=heartbeat_interval,
        open_timeout=2.0,
        connect_options={"proxy": None},
        **options,
    )


class Writer:
    """Inserts w0, w1, ... one row per transaction until stopped, then the sentinel row; each row's
    `data` carries `pad` bytes (to fill socket buffers quickly)."""

    def __init__(self, database_url: str, table: str, pad: int = 0) -> None:
        self._url = database_url
        self._insert = sql.SQL("INSERT INTO {} (name, data) VALUES (%s, %s)").format(sql.Identifier(table))
        self._data = Jsonb({"pad": "x" * pad}) if pad else None
        self._stop = asyncio.Event()
        self.written = 0

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            while not self._stop.is_set():
                await conn.execute(self._insert, (f"w{self.written}", self._data))
                self.written += 1
                await asyncio.sleep(0.002)
            await conn.execute(self._insert, (SENTINEL, None))

    def stop(self) -> None:
        self._stop.set()


@contextlib.asynccontextmanager
async def writing(database_url: str, table: str, pad: int = 0) -> AsyncIterator[Writer]:
    writer = Writer(database_url, table, pad)
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        writer.stop()
        await task


class Collector:
    """Takes a stream's changes until the sentinel row; `progress` lets the test wait for more."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._grown = asyncio.Event()

    async def run(self, stream: Any) -> None:
        async for change in stream:
            assert isinstance(change, Change), change
            self.changes.append(change)
            self._grown.set()
            if change.record is not None and change.record["name"] == SENTINEL:
                return

    async def more_than(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.changes) <= count:
                self._grown.clear()
                await self._grown.wait()


async def table_rows(db: psycopg.AsyncConnection, table: str) -> list[tuple[int, str]]:
    query = sql.SQL("SELECT id, name FROM {} ORDER BY id").format(sql.Identifier(table))
    return [(row[0], row[1]) for row in await (await db.execute(query)).fetchall()]


def assert_exactly_the_table(changes: list[Change], rows: list[tuple[int, str]]) -> None:
    ids = [change.id for change in changes]
    assert ids == sorted(set(ids)), "a change was repeated or reordered"
    assert all(change.type == "INSERT" for change in changes)
    assert [(c.record or {})["id"] for c in changes] == [row_id for row_id, _ in rows], "a change was lost"
    assert [(c.record or {})["name"] for c in changes] == [name for _, name in rows]


def cut(client: RealtimeClient) -> None:
    """Drop the client's connection as a network failure would: no close frame, no goodbye."""
    session = client.session
    assert session is not None, "the client is not connected"
    session.connection.transport.abort()
