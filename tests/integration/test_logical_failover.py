"""Logical mode with the service as processes: the consumer killed (-9) mid-stream and mid-transaction, a
second instance taking over, the slot dropped under the service or invalidated while it was down."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from app.services.embedded_postgres import EmbeddedPostgres
from tests.conftest import make_settings
from tests.support.client import RealtimeClient, realtime_client
from tests.support.modes import capture_env, logical_database, slot_for
from tests.support.processes import ServerProcess, server_process
from tests.support.server import ServerThread

# Bounds against hanging, never measurements of speed.
HANG_GUARD = 60.0
POLL = 0.05


@pytest.fixture
def own_database(logical_server_url: str) -> Iterator[str]:
    """A logical-mode database no other server consumes (the shared one's consumer would hold the lock)."""
    with logical_database(logical_server_url) as url:
        yield url


@pytest.fixture
async def table(own_database: str) -> str:
    name = f"failover_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("CREATE TABLE public.{} (id serial PRIMARY KEY, n int NOT NULL)").format(
                sql.Identifier(name)
            )
        )
        await conn.execute("SELECT enable_realtime('public', %s)", (name,))
    return name


def _env(url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "LOG_LEVEL": "warning",
        "REALTIME_CONSUMER_TAKEOVER_INTERVAL": "0.1",
        "REALTIME_LOGICAL_BATCH": "200",
        **capture_env(url),
    }


async def _stats(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        stats: dict[str, Any] = (await http.get("/api/realtime/stats")).json()
        return stats


async def _until(check: Any, what: str) -> None:
    """Wait until the async `check()` is true; the timeout only guards against a hang."""
    try:
        async with asyncio.timeout(HANG_GUARD):
            while True:
                if await check():
                    return
                await asyncio.sleep(POLL)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def _is_consumer(server: ServerProcess) -> bool:
    return bool((await _stats(server))["consumer"])


async def _ns(client: RealtimeClient, last: int) -> list[tuple[int, int]]:
    """(id, n) of every broadcast up to and including n == last."""
    received = []
    while True:
        message = await client.receive()
        assert message["type"] == "broadcast", message
        received.append((message["id"], message["payload"]["record"]["n"]))
        if received[-1][1] == last:
            return received


@pytest.fixture
async def two_instances(own_database: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """`first` is the consumer; `second` waits to take over."""
    async with server_process(_env(own_database)) as first:
        await _until(lambda: _is_consumer(first), "the first instance to consume")
        async with server_process(_env(own_database)) as second:
            yield first, second


async def test_kill_9_of_the_consumer_mid_stream_another_instance_takes_over(
    own_database: str, table: str, two_instances: tuple[ServerProcess, ServerProcess]
) -> None:
    first, second = two_instances
    assert not await _is_consumer(second)
    rows, kill_at = 600, 200
    insert = sql.SQL("INSERT INTO {} (n) VALUES (%s)").format(sql.Identifier(table))
    reached = asyncio.Event()

    async def write() -> None:
        async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as conn:
            for n in range(rows):
                if n == kill_at:
                    reached.set()
                await conn.execute(insert, (n,))

    async with realtime_client(second.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        collected = asyncio.create_task(_ns(client, rows - 1))
        writer = asyncio.create_task(write())
        await reached.wait()
        os.kill(first.pid, signal.SIGKILL)
        await writer
        async with asyncio.timeout(HANG_GUARD):
            received = await collected
    assert [n for _, n in received] == list(range(rows))
    ids = [i for i, _ in received]
    assert ids == list(range(ids[0], ids[0] + rows)), "ids are not consecutive"
    assert await _is_consumer(second)


async def test_kill_9_mid_transaction_writes_the_rest_once(
    own_database: str, table: str, two_instances: tuple[ServerProcess, ServerProcess]
) -> None:
    first, second = two_instances
    rows = 20_000
    async with realtime_client(second.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        collected = asyncio.create_task(_ns(client, rows - 1))
        async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("INSERT INTO {} (n) SELECT g FROM generate_series(0, %s) AS g").format(
                    sql.Identifier(table)
                ),
                (rows - 1,),
            )

            async def part_written() -> bool:
                row = await (
                    await conn.execute("SELECT complete, written FROM fluxbase_realtime.logical_progress")
                ).fetchone()
                return row is not None and not row[0] and row[1] > 0

            await _until(part_written, "the consumer to have written part of the transaction")
            os.kill(first.pid, signal.SIGKILL)
            async with asyncio.timeout(HANG_GUARD):
                received = await collected
            [[logged]] = await (
                await conn.execute(
                    "SELECT count(*) FROM fluxbase_realtime.change_log WHERE table_name = %s", (table,)
                )
            ).fetchall()
    assert sorted(n for _, n in received) == list(range(rows))
    assert all(b[0] == a[0] + 1 for a, b in itertools.pairwise(received)), "ids are not consecutive"
    assert logged == rows


async def test_the_slot_dropped_under_the_service_is_a_replay_gap_not_silence(
    own_database: str, table: str
) -> None:
    slot = slot_for(own_database)
    insert = sql.SQL("INSERT INTO {} (n) VALUES (%s)").format(sql.Identifier(table))
    async with (
        server_process(_env(own_database)) as server,
        await psycopg.AsyncConnection.connect(own_database, autocommit=True) as conn,
        realtime_client(server.ws_url) as client,
    ):
        await client.subscribe(f"table:public.{table}")
        await conn.execute(insert, (1,))
        [[before, _]] = await _ns(client, 1)
        async with asyncio.timeout(HANG_GUARD):
            while True:  # the consumer reconnects at once: terminate its walsender and drop in one go
                await conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                    " WHERE slot_name = %s AND active_pid IS NOT NULL",
                    (slot,),
                )
                try:
                    await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    break
                except psycopg.errors.ObjectInUse:
                    await asyncio.sleep(0.01)
        gap = await client.receive()
        assert gap["type"] == "error" and gap["code"] == "replay_gap", gap
        await _until(lambda: _is_consumer(server), "the consumer to stream the new slot")
        await conn.execute(insert, (2,))
        [[after, n]] = await _ns(client, 2)
        assert n == 2 and after > before
        async with realtime_client(server.ws_url) as resumed:
            await resumed.subscribe(f"table:public.{table}", since=before)
            resumed_gap = await resumed.receive()
            assert resumed_gap["code"] == "replay_gap", resumed_gap
            assert await _ns(resumed, 2) == [(after, 2)]
        stats = await _stats(server)
        assert stats["slot_status"] in ("reserved", "extended"), stats
        assert "logical_slot_lost" in server.output()


@pytest.fixture
def small_cluster() -> Iterator[str]:
    """A cluster of this test's own that keeps at most 1 MB of WAL for a slot (max_slot_wal_keep_size)."""
    work = Path(tempfile.mkdtemp(prefix="fluxbase-slot-", dir="/tmp"))
    work.chmod(0o755)  # when root, the server runs as `nobody`, which must traverse it
    try:
        with EmbeddedPostgres(work / "postgres") as cluster:
            with psycopg.connect(cluster.url, autocommit=True) as admin:
                admin.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
                admin.execute("SELECT pg_reload_conf()")
            with logical_database(cluster.url) as url:
                yield url
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def test_an_invalidated_slot_is_replaced_and_reported_as_a_replay_gap(small_cluster: str) -> None:
    url = small_cluster
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        await db.execute("CREATE TABLE public.t (id serial PRIMARY KEY, n int NOT NULL)")
        await db.execute("SELECT enable_realtime('public', 't')")
        await db.execute("CREATE TABLE public.filler (x text)")
        with ServerThread(make_settings(url)) as server:
            async with realtime_client(server.ws_url) as client:
                await client.subscribe("table:public.t")
                await db.execute("INSERT INTO t (n) VALUES (1)")
                [[seen, _]] = await _ns(client, 1)
        # Nobody consumes now: a change the slot holds, then WAL past what the slot may keep.
        await db.execute("INSERT INTO t (n) VALUES (2)")
        slot = slot_for(url)
        async with asyncio.timeout(HANG_GUARD):
            while True:
                await db.execute("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 1000)")
                await db.execute("SELECT pg_switch_wal()")
                await db.execute("CHECKPOINT")
                row = await (
                    await db.execute(
                        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                    )
                ).fetchone()
                if row == ("lost",):
                    break
        with ServerThread(make_settings(url)) as server:
            async with realtime_client(server.ws_url) as client:
                await client.subscribe("table:public.t", since=seen)
                gap = await client.receive()
                assert gap["code"] == "replay_gap", gap
                await db.execute("INSERT INTO t (n) VALUES (3)")
                assert [n for _, n in await _ns(client, 3)] == [3]
            state = await (
                await db.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            ).fetchone()
    assert state is not None and state[0] != "lost"
