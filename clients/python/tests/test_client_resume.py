"""The client against a real server that dies: every change exactly once, in order, whatever happens.

A writer inserts continuously while the server is killed (SIGKILL) and restarted on the same port, or
frozen (SIGSTOP) so that only the heartbeat watchdog can tell; the client's stream must end equal to the
table, each row once, in commit order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
from psycopg import sql

from fluxbase_realtime_client import Backoff, Change, RealtimeClient
from tests.conftest import make_settings
from tests.support.processes import server_process
from tests.support.server import ServerThread

# Bounds against hanging, never measurements of speed.
WAIT = 60.0
SENTINEL = "end"
HEARTBEAT = 0.2


def _env(database_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "warning",
        "REALTIME_HEARTBEAT_INTERVAL": str(HEARTBEAT),
    }


def _client(url: str, **options: Any) -> RealtimeClient:
    return RealtimeClient(
        url,
        backoff=Backoff(base=0.05, cap=0.5),
        heartbeat_interval=HEARTBEAT,
        open_timeout=2.0,
        connect_options={"proxy": None},
        **options,
    )


class Writer:
    """Inserts w0, w1, ... one row per transaction until stopped, then the sentinel row."""

    def __init__(self, database_url: str, table: str) -> None:
        self._url = database_url
        self._insert = sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table))
        self._stop = asyncio.Event()
        self.written = 0

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            while not self._stop.is_set():
                await conn.execute(self._insert, (f"w{self.written}",))
                self.written += 1
                await asyncio.sleep(0.002)
            await conn.execute(self._insert, (SENTINEL,))

    def stop(self) -> None:
        self._stop.set()


@contextlib.asynccontextmanager
async def _writing(database_url: str, table: str) -> AsyncIterator[Writer]:
    writer = Writer(database_url, table)
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


async def _table_rows(db: psycopg.AsyncConnection, table: str) -> list[tuple[int, str]]:
    query = sql.SQL("SELECT id, name FROM {} ORDER BY id").format(sql.Identifier(table))
    return [(row[0], row[1]) for row in await (await db.execute(query)).fetchall()]


def _assert_exactly_the_table(changes: list[Change], rows: list[tuple[int, str]]) -> None:
    ids = [change.id for change in changes]
    assert ids == sorted(set(ids)), "a change was repeated or reordered"
    assert all(change.type == "INSERT" for change in changes)
    assert [(c.record or {})["id"] for c in changes] == [row_id for row_id, _ in rows], "a change was lost"
    assert [(c.record or {})["name"] for c in changes] == [name for _, name in rows]


async def test_every_change_arrives_once_in_order_across_two_kills_of_the_server(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    env = _env(database_url)
    collector = Collector()
    async with server_process(env, "--no-migrate") as first:
        port = first.port
        async with _client(first.ws_url) as client:
            stream = client.changes(f"table:public.{table}")
            await stream.subscribed()
            consuming = asyncio.create_task(collector.run(stream))
            async with _writing(database_url, table) as writer:
                await collector.more_than(50)
                first.kill()
                async with server_process(env, "--no-migrate", port=port) as second:
                    await collector.more_than(len(collector.changes) + 50)  # through the new server
                    second.kill()
                async with server_process(env, "--no-migrate", port=port):
                    await collector.more_than(len(collector.changes) + 50)
                    writer.stop()
                    async with asyncio.timeout(WAIT):
                        await consuming
            assert client.connects == 3
    rows = await _table_rows(db, table)
    assert rows[-1][1] == SENTINEL and len(rows) > 150
    _assert_exactly_the_table(collector.changes, rows)


async def test_a_frozen_server_is_left_by_the_watchdog_and_the_stream_resumes(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    """SIGSTOP keeps the socket open and silent: no close, no reset; only missing heartbeats tell."""
    collector = Collector()
    left = asyncio.Event()

    def on_status(status: str) -> None:
        if status == "connecting" and collector.changes:
            left.set()

    async with server_process(_env(database_url), "--no-migrate") as server:
        async with _client(server.ws_url, on_status=on_status) as client:
            stream = client.changes(f"table:public.{table}")
            await stream.subscribed()
            consuming = asyncio.create_task(collector.run(stream))
            async with _writing(database_url, table) as writer:
                await collector.more_than(20)
                os.kill(server.pid, signal.SIGSTOP)
                try:
                    async with asyncio.timeout(WAIT):
                        await left.wait()
                finally:
                    os.kill(server.pid, signal.SIGCONT)
                await collector.more_than(len(collector.changes) + 20)
                writer.stop()
                async with asyncio.timeout(WAIT):
                    await consuming
            assert client.connects >= 2
    _assert_exactly_the_table(collector.changes, await _table_rows(db, table))


async def test_one_socket_carries_every_stream(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    other = f"{table}_b"
    await db.execute(
        sql.SQL("CREATE TABLE public.{} (id serial PRIMARY KEY, name text)").format(sql.Identifier(other))
    )
    await db.execute("SELECT enable_realtime('public', %s)", (other,))
    # A server of its own: the connection count is this client's alone.
    with ServerThread(make_settings(database_url)) as server:
        await _two_streams_on_one_socket(server, db, table, other)


async def _two_streams_on_one_socket(
    server: ServerThread, db: psycopg.AsyncConnection, table: str, other: str
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http, _client(server.ws_url) as client:
        first = client.changes(f"table:public.{table}")
        second = client.changes(f"table:public.{other}")
        await first.subscribed()
        await second.subscribed()
        assert (await http.get("/api/realtime/stats")).json()["connections"] == 1
        for name in (table, other):
            await db.execute(
                sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(name)), (f"to {name}",)
            )
        async with asyncio.timeout(WAIT):
            got_first = await anext(first)
            got_second = await anext(second)
        assert isinstance(got_first, Change) and isinstance(got_second, Change)
        assert (got_first.table, (got_first.record or {})["name"]) == (table, f"to {table}")
        assert (got_second.table, (got_second.record or {})["name"]) == (other, f"to {other}")
        await second.close()
        assert [item async for item in second] == []  # a closed stream ends
