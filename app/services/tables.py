"""What the database says about the table a channel names, for the subscribes asking at once."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from app.protocol import TableChannel
from app.services.coalesce import BatchedLookup, each_alone
from app.services.rls import TableAccess

log = logging.getLogger(__name__)


class TableStatus(StrEnum):
    MISSING = "missing"
    DISABLED = "disabled"
    ENABLED = "enabled"
    # A partition whose changes are reported on its realtime ancestor's channel (captured_through).
    PARTITION = "partition"


# What a subscribe checks, for every (schema, table, role) asked since the previous batch, in one statement:
# the table's status and what the role may see of it (no row from table_access: the table is gone).
CHECKS = """
SELECT k.n, fluxbase_realtime.table_status(k.s, k.t), a.*
FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS k(s, t, r, n)
LEFT JOIN LATERAL fluxbase_realtime.table_access(k.s, k.t, k.r) AS a ON true
ORDER BY k.n
"""

CheckKey = tuple[str, str, str]
Check = tuple[TableStatus, TableAccess | None]


class TableDirectory:
    """Answers whether a channel's table exists and has realtime enabled, and what a role may see of it.

    Subscribes ask at connect-storm rates; their questions are batched (app.services.coalesce): one
    query answers every subscribe that asked while the previous one ran, as fresh as a query of its own.
    `max_waiting` bounds how many subscribes may wait for an answer (more are refused with Busy).
    """

    def __init__(self, pool: AsyncConnectionPool, *, max_waiting: int = 10_000) -> None:
        self._pool = pool
        self.checks: BatchedLookup[CheckKey, Check] = BatchedLookup(self._fetch, max_waiting=max_waiting)

    async def check(self, channel: TableChannel, role: str) -> Check:
        return await self.checks.get((channel.schema, channel.table, role))

    async def captured_through(self, channel: TableChannel) -> str | None:
        """For a PARTITION: the channel its changes are reported on."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT via_schema, via_table FROM fluxbase_realtime.capturing_table(%s, %s)",
                (channel.schema, channel.table),
            )
            row = await cursor.fetchone()
        return TableChannel(schema=row[0], table=row[1]).name if row else None

    async def _fetch(self, keys: list[CheckKey]) -> dict[CheckKey, Check | Exception]:
        try:
            return dict(await self._query(keys))
        except psycopg.errors.OperationalError:
            raise  # the database is unavailable: every subscribe of the batch is told so
        except psycopg.Error as error:
            if len(keys) == 1:
                raise
            # Whatever one subscribe's names did to the statement must not refuse the others: alone,
            # each gets its own answer or its own error.
            log.warning(
                "table_checks_failed keys=%d error=%s: checking one by one", len(keys), type(error).__name__
            )
        return await each_alone(keys, self._check_alone)

    async def _check_alone(self, key: CheckKey) -> Check:
        return (await self._query([key]))[key]

    async def _query(self, keys: list[CheckKey]) -> dict[CheckKey, Check]:
        schemas, tables, roles = ([key[i] for key in keys] for i in range(3))
        async with self._pool.connection() as conn:
            rows: list[tuple[Any, ...]] = await (
                await conn.execute(CHECKS, (schemas, tables, roles))
            ).fetchall()
        return {
            key: (TableStatus(row[1]) if row[1] else TableStatus.MISSING, TableAccess.from_row(row[2:]))
            for key, row in zip(keys, rows, strict=True)
        }
