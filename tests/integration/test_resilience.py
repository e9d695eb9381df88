"""Resilience under a live write stream: the listener's connection is killed, the database restarts.

Subscribers must still get every committed row exactly once, in commit order. Absence is proved with a
sentinel row written after the stream, never with a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from app import migrations
from app.services.embedded_postgres import EmbeddedPostgres, find_server_binaries
from tests.conftest import make_settings
from tests.support.client import RealtimeClient, realtime_client
from tests.support.modes import switch_to_logical
from tests.support.server import ServerThread

# Bounds against hanging, never measurements of speed.
HANG_GUARD = 60.0
POLL = 0.02

# pg_terminate_backend in the select list, so that it only runs on the rows WHERE kept.
TERMINATE_LISTENERS = """
    SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'fluxbase-realtime-listener'
"""
LISTENERS_OTHER_THAN = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'fluxbase-realtime-listener'
      AND NOT pid = ANY (%s)
"""


async def _poll(condition: Any, what: str) -> None:
    """Wait until the async `condition()` is true; the timeout only guards against a hang."""
    try:
        async with asyncio.timeout(HANG_GUARD):
            while True:
                if await condition():
                    return
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise AssertionError(f"gave up waiting: {what}") from None


async def _wait_until_ready(http: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        try:
            return (await http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await _poll(ready, "/readyz to answer 200")


def _collect(clients: list[RealtimeClient], is_sentinel: Any) -> list[asyncio.Task[list[dict[str, Any]]]]:
    """One task per client reading its broadcasts up to and including the sentinel, started now."""
    return [asyncio.create_task(client.until_broadcast(is_sentinel)) for client in clients]


def _assert_strictly_increasing(ids: list[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(ids)), ids


@contextlib.contextmanager
def _private_cluster() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL cluster of this test's own, which it may restart; stopped and removed at the end."""
    work = Path(tempfile.mkdtemp(prefix="fluxbase-resilience-", dir="/tmp"))
    work.chmod(0o755)  # when root, the server runs as `nobody`, which must traverse it
    cluster = EmbeddedPostgres(work / "postgres")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


async def test_killing_the_listener_mid_stream_loses_and_repeats_nothing(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    rows = 1000
    kill_at = (200, 600)
    # The writer does not finish before the last kill has landed, however long the listener takes to
    # come back between kills: the kills happen mid-stream, with inserts in flight around them.
    hold_at = 950
    reached = {n: asyncio.Event() for n in kill_at}
    kills_done = asyncio.Event()
    insert = sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table))

    async def write() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for n in range(rows):
                if n in reached:
                    reached[n].set()
                if n == hold_at:
                    await kills_done.wait()
                await conn.execute(insert, (f"row {n}",))

    async def terminate_listeners() -> list[int]:
        return [
            pid for pid, terminated in await (await db.execute(TERMINATE_LISTENERS)).fetchall() if terminated
        ]

    async def listeners_back(killed: list[int]) -> bool:
        row = await (await db.execute(LISTENERS_OTHER_THAN, (killed,))).fetchone()
        return row is not None and row[0] >= len(killed)

    channel = f"table:public.{table}"
    with ServerThread(make_settings(database_url)) as server:
        async with (
            httpx.AsyncClient(base_url=server.http_url) as http,
            realtime_client(server.ws_url) as c1,
            realtime_client(server.ws_url) as c2,
            realtime_client(server.ws_url) as c3,
        ):
            clients = [c1, c2, c3]
            for client in clients:
                await client.subscribe(channel)
            await _wait_until_ready(http)
            collectors = _collect(clients, lambda m: m["payload"]["record"]["name"] == "sentinel")
            writer = asyncio.create_task(write())
            try:
                for n in kill_at:
                    await reached[n].wait()
                    killed = await terminate_listeners()
                    # This server's listener at least (the shared session server's may be there too).
                    assert killed, "no listener connection to terminate"
                    if n != kill_at[-1]:
                        # Let every killed listener reconnect, so that the next kill finds one to kill.
                        await _poll(lambda k=killed: listeners_back(k), "the listeners to reconnect")
            finally:
                kills_done.set()
                await writer
            await db.execute(insert, ("sentinel",))
            received = await asyncio.gather(*collectors)

    expected = [f"row {n}" for n in range(rows)] + ["sentinel"]
    for messages in received:
        assert [m["payload"]["record"]["name"] for m in messages] == expected
        assert [m["payload"]["type"] for m in messages] == ["INSERT"] * len(expected)
        _assert_strictly_increasing([m["id"] for m in messages])
        _assert_strictly_increasing([m["payload"]["record"]["id"] for m in messages])
    # Every subscriber saw the same changes under the same ids.
    assert len({tuple(m["id"] for m in messages) for messages in received}) == 1


@pytest.mark.parametrize("mode", ["trigger", "logical"])
async def test_a_database_restart_mid_stream_delivers_exactly_what_committed(mode: str) -> None:
    if find_server_binaries() is None:
        pytest.skip(reason="needs PostgreSQL server binaries (initdb/pg_ctl)")
    rows = 800
    restart_at = 300
    # The writer does not finish before the restart is over: it straddles the restart.
    hold_at = 700
    sentinel = -1

    with _private_cluster() as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE resilience")
        url = psycopg.conninfo.make_conninfo(cluster.url, dbname="resilience")
        migrations.upgrade(url)
        if mode == "logical":
            switch_to_logical(url)  # the private cluster is the embedded machinery's: wal_level=logical
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.t (id bigserial PRIMARY KEY, n integer NOT NULL UNIQUE)")
            conn.execute("SELECT enable_realtime('public', 't')")

        restart_due = asyncio.Event()
        restart_over = asyncio.Event()
        unknown_outcome: list[int] = []  # rows whose INSERT died with the connection

        async def connect() -> psycopg.AsyncConnection:
            """Connect, retrying while the server is down or not yet accepting connections."""
            async with asyncio.timeout(HANG_GUARD):
                while True:
                    try:
                        return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
                    except psycopg.OperationalError:
                        await asyncio.sleep(POLL)

        async def write() -> None:
            conn = await connect()
            try:
                for n in range(rows):
                    if n == restart_at:
                        restart_due.set()
                    if n == hold_at:
                        await restart_over.wait()
                    try:
                        await conn.execute("INSERT INTO t (n) VALUES (%s)", (n,))
                    except psycopg.OperationalError:
                        # Whether row n committed is unknown; the table says. Carry on with the next n.
                        unknown_outcome.append(n)
                        await conn.close()
                        conn = await connect()
            finally:
                await conn.close()

        with ServerThread(make_settings(url)) as server:
            async with (
                httpx.AsyncClient(base_url=server.http_url) as http,
                realtime_client(server.ws_url) as c1,
                realtime_client(server.ws_url) as c2,
                realtime_client(server.ws_url) as c3,
            ):
                clients = [c1, c2, c3]
                for client in clients:
                    await client.subscribe("table:public.t")
                await _wait_until_ready(http)
                collectors = _collect(clients, lambda m: m["payload"]["record"]["n"] == sentinel)
                writer = asyncio.create_task(write())
                try:
                    await restart_due.wait()
                    await asyncio.to_thread(cluster.restart)
                finally:
                    restart_over.set()
                    await writer
                # The restart cut the writer's session, so the reconnect path really ran.
                assert unknown_outcome
                await _wait_until_ready(http)
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute("INSERT INTO t (n) VALUES (%s)", (sentinel,))
                    cursor = await conn.execute("SELECT n FROM t ORDER BY id")
                    committed = [n for (n,) in await cursor.fetchall()]
                received = await asyncio.gather(*collectors)

    assert committed[-1] == sentinel
    # Every INSERT that returned committed; only those cut by the restart may be missing.
    assert set(range(rows)) - set(committed) <= set(unknown_outcome)
    for messages in received:
        assert [m["payload"]["record"]["n"] for m in messages] == committed
        _assert_strictly_increasing([m["id"] for m in messages])
    assert len({tuple(m["id"] for m in messages) for messages in received}) == 1
