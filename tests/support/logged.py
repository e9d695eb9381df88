"""Waiting for changes to reach the change log, for tests of a plain subscribe's starting point.

In logical mode a change reaches the log a moment after its commit (the consumer writes it), so a plain
subscribe right after a commit may start before it (docs/design.md, known limits of logical mode). A
test that means "committed before the subscribe" waits for the change to be logged first; in trigger
mode it is logged by its own transaction and the wait returns at once.
"""

from __future__ import annotations

import asyncio
import time

import psycopg

COUNT_LOGGED = (
    "SELECT count(*) FROM fluxbase_realtime.change_log WHERE schema_name = %s AND table_name = %s"
)
DEADLINE = 60.0  # a bound against hanging, never a measurement of speed


async def until_logged(db: psycopg.AsyncConnection, table: str, count: int, schema: str = "public") -> None:
    """Until the change log holds at least `count` changes of `schema`.`table`."""
    deadline = time.monotonic() + DEADLINE
    while True:
        row = await (await db.execute(COUNT_LOGGED, (schema, table))).fetchone()
        if row is not None and row[0] >= count:
            return
        assert time.monotonic() < deadline, f"{count} changes of {table} never reached the log"
        await asyncio.sleep(0.02)
