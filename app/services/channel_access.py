"""Who may read and write a broadcast channel: the policies of fluxbase_realtime_access.broadcast_channels,
evaluated by PostgreSQL with a subscriber's role and claims (sql/broadcast.sql)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from app.protocol import BroadcastChannel
from app.services.audience import Audience

PERMISSIONS = "SELECT can_read, can_write FROM fluxbase_realtime.broadcast_permissions(%s, %s::jsonb, %s)"


@dataclass(frozen=True, slots=True)
class ChannelPermissions:
    read: bool
    write: bool


EVERYTHING = ChannelPermissions(read=True, write=True)


class ChannelAccess:
    """Answers, once per subscribe and per token refresh, what an audience may do on a channel."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self.checks = 0

    async def permissions(self, audience: Audience, channel: BroadcastChannel) -> ChannelPermissions:
        if audience.bypasses_rls:
            return EVERYTHING  # service_role is trusted with every channel, as with every table
        self.checks += 1
        async with self._pool.connection() as conn:
            cursor = await conn.execute(PERMISSIONS, (audience.role, audience.claims, channel.topic))
            row = await cursor.fetchone()
        return ChannelPermissions(bool(row and row[0]), bool(row and row[1]))
