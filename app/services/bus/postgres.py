"""The bus through PostgreSQL: packets are NOTIFY payloads on one channel, LISTENed to by every instance.

NOTIFY's payload must be shorter than 8000 bytes: a larger packet is written to the unlogged table
fluxbase_realtime.bus_packets and its id sent instead (`@<id>`), and receivers read it from there. Several
packets go out in one statement (one transaction, one commit): notifications of one transaction are
delivered together and in order, and every packet is distinct (it carries its sender's packet number), so
PostgreSQL folds none of them away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from app.services.bus.transport import BusUnavailable, backoff
from app.services.sessions import KEEPALIVES

log = logging.getLogger(__name__)

NOTIFY_LIMIT = 7999
SEND = "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) WITH ORDINALITY AS u(p, n) ORDER BY n"
STORE = "INSERT INTO fluxbase_realtime.bus_packets (payload) VALUES (%s) RETURNING id"
FETCH = "SELECT payload FROM fluxbase_realtime.bus_packets WHERE id = %s"
PRUNE = "DELETE FROM fluxbase_realtime.bus_packets WHERE written_at < clock_timestamp() - interval '1 minute'"
PRUNE_EVERY = 100  # stored packets


class PostgresTransport:
    name = "postgres"
    max_packet_bytes: int | None = NOTIFY_LIMIT

    def __init__(self, conninfo: str, channel: str, pool: AsyncConnectionPool) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._pool = pool
        self._listening = False
        self._sender: AsyncConnection[Any] | None = None
        self._send_lock = asyncio.Lock()
        self._stored = 0

    @property
    def connected(self) -> bool:
        return self._listening

    async def run(self, on_packet: Callable[[bytes], None], on_connected: Callable[[], None]) -> None:
        attempt = 0
        while True:
            try:
                async with await _connect(self._conninfo, "fluxbase-realtime-bus") as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self._listening = True
                    attempt = 0
                    log.info("bus_connected transport=postgres")
                    on_connected()
                    async for notify in conn.notifies():
                        payload = notify.payload
                        if payload.startswith("@"):
                            stored = await self._fetch(int(payload[1:]))
                            if stored is not None:
                                on_packet(stored.encode())
                        else:
                            on_packet(payload.encode())
            except (psycopg.Error, OSError) as error:
                log.warning("bus_disconnected transport=postgres error=%s", type(error).__name__)
            finally:
                self._listening = False
            attempt += 1
            await asyncio.sleep(backoff(attempt))

    async def _fetch(self, packet_id: int) -> str | None:
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(FETCH, (packet_id,))).fetchone()
        except psycopg.Error:
            log.warning("bus_packet_unreadable id=%d", packet_id)
            return None
        return str(row[0]) if row else None

    async def send(self, packets: list[bytes]) -> None:
        async with self._send_lock:
            try:
                conn = await self._sender_connection()
                texts = [await self._notifiable(conn, packet.decode()) for packet in packets]
                await conn.execute(SEND, (self._channel, texts))
            except (psycopg.Error, OSError) as error:
                await self._drop_sender()
                raise BusUnavailable(f"the PostgreSQL bus is unavailable ({type(error).__name__})") from None

    async def _notifiable(self, conn: AsyncConnection[Any], text: str) -> str:
        if len(text) <= NOTIFY_LIMIT // 4 or len(text.encode()) <= NOTIFY_LIMIT:
            return text
        row = await (await conn.execute(STORE, (text,))).fetchone()
        assert row is not None
        self._stored += 1
        if self._stored % PRUNE_EVERY == 0:
            await conn.execute(PRUNE)
        return f"@{row[0]}"

    async def _sender_connection(self) -> AsyncConnection[Any]:
        if self._sender is None or self._sender.closed:
            self._sender = await _connect(self._conninfo, "fluxbase-realtime-bus-send")
        return self._sender

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(Exception):
                await sender.close()

    async def close(self) -> None:
        await self._drop_sender()


async def _connect(conninfo: str, name: str) -> AsyncConnection[Any]:
    return await AsyncConnection.connect(
        conninfo,
        autocommit=True,
        application_name=name,
        **KEEPALIVES,
        connect_timeout=10,
    )
