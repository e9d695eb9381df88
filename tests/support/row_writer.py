"""A writer that keeps committing rows while a test breaks things, then ends with a sentinel row."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

SENTINEL = "end"
WAIT = 60.0  # a bound against hanging, never a measurement of speed


class RowWriter:
    """Inserts w0, w1, ... one row per transaction into `table` (a `name` column) until stopped, then the
    sentinel row: a client holding the sentinel holds everything committed before it."""

    def __init__(self, database_url: str, table: str) -> None:
        self._url = database_url
        self._insert = sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table))
        self._stop = asyncio.Event()
        self._wrote = asyncio.Event()
        self.written = 0

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            while not self._stop.is_set():
                await conn.execute(self._insert, (f"w{self.written}",))
                self.written += 1
                self._wrote.set()
                await asyncio.sleep(0.005)
            await conn.execute(self._insert, (SENTINEL,))

    async def more(self, count: int) -> None:
        """Until `count` more rows have been committed."""
        target = self.written + count
        async with asyncio.timeout(WAIT):
            while self.written < target:
                self._wrote.clear()
                await self._wrote.wait()

    def stop(self) -> None:
        self._stop.set()
