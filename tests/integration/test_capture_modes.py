"""Switching a database between the capture modes while writers write: every change once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator

import psycopg
import pytest

from app import migrations
from tests.conftest import make_settings
from tests.support.client import realtime_client
from tests.support.databases import scratch_database
from tests.support.modes import drop_slots, logical_settings
from tests.support.server import ServerThread


@pytest.fixture
def trigger_mode_database(logical_server_url: str) -> Iterator[str]:
    """A migrated database on the wal_level=logical cluster, still in trigger mode."""
    with scratch_database(logical_server_url) as url:
        migrations.upgrade(url)
        try:
            yield url
        finally:
            drop_slots(url)


async def test_switching_to_logical_and_back_loses_repeats_and_reorders_nothing(
    trigger_mode_database: str,
) -> None:
    url = trigger_mode_database
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        await db.execute("CREATE TABLE public.t (id serial PRIMARY KEY, n int NOT NULL)")
        await db.execute("SELECT enable_realtime('public', 't')")
    written = 0
    stop = asyncio.Event()

    async def write() -> None:
        nonlocal written
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                await conn.execute("INSERT INTO t (n) VALUES (%s)", (written,))
                written += 1

    async def after(count: int) -> None:
        """Return once the writer has committed `count` more rows (polled: it may be blocked a while)."""
        target = written + count
        while True:
            if written >= target:
                return
            await asyncio.sleep(0.01)

    logical = make_settings(url, **logical_settings(url))
    writer = asyncio.create_task(write())
    try:
        await after(50)
        with ServerThread(logical):  # trigger -> logical while the writer writes
            await after(100)
        await after(50)  # the service is stopped: the slot holds these
        back = make_settings(url, realtime_slot=logical.realtime_slot)  # trigger mode, the same slot
        with ServerThread(back) as server:  # logical -> trigger: drains the slot first
            await after(100)
            stop.set()
            await writer
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
                await db.execute("INSERT INTO t (n) VALUES (-1)")
                modes = await (await db.execute("SELECT capture FROM realtime_tables()")).fetchall()
                slots = await (
                    await db.execute(
                        "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
                    )
                ).fetchone()
            async with realtime_client(server.ws_url) as client:
                await client.subscribe("table:public.t", since=0)
                received = await client.until_broadcast(lambda m: m["payload"]["record"]["n"] == -1)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await writer
    assert [m["payload"]["record"]["n"] for m in received] == [*range(written), -1]
    assert all(b["id"] == a["id"] + 1 for a, b in itertools.pairwise(received))
    assert modes == [("trigger",)] and slots == (0,)
