"""What the database says about the table a channel names."""

from __future__ import annotations

from enum import StrEnum

from psycopg_pool import AsyncConnectionPool

from app.protocol import TableChannel


class TableStatus(StrEnum):
    MISSING = "missing"
    DISABLED = "disabled"
    ENABLED = "enabled"
    # A partition whose changes are reported on its realtime ancestor's channel (captured_through).
    PARTITION = "partition"


class TableDirectory:
    """Answers whether a channel's table exists and has realtime enabled (asked once per subscribe)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def status(self, channel: TableChannel) -> TableStatus:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT fluxbase_realtime.table_status(%s, %s)", (channel.schema, channel.table)
            )
            row = await cursor.fetchone()
        return TableStatus(row[0]) if row else TableStatus.MISSING

    async def captured_through(self, channel: TableChannel) -> str | None:
        """For a PARTITION: the channel its changes are reported on."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT via_schema, via_table FROM fluxbase_realtime.capturing_table(%s, %s)",
                (channel.schema, channel.table),
            )
            row = await cursor.fetchone()
        return TableChannel(schema=row[0], table=row[1]).name if row else None
