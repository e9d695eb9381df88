"""Bulk transactions: one transaction touching 100,000 rows, with the service as its own process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from typing import NamedTuple

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql

from tests.support.client import RealtimeClient, realtime_client
from tests.support.modes import BOTH_MODES, capture_env
from tests.support.processes import server_process

BULK_ROWS = 100_000
# Each row carries 1,024 characters, so an UPDATE's frame (record and old_record) is about 2 KB: the bulk is
# about 200 MB of frames for each subscriber.
ROW_PAYLOAD = "repeat(md5(i::text), 32)"
# A server holding the whole transaction's frames for even one subscriber would grow by about 200 MB. A
# bounded pipeline holds a fetch batch (500 changes, ~1 MB), a send queue per subscriber (1,024 frames,
# ~2 MB) and the transport buffers: a few MB. 100 MB leaves room for allocator slack and whatever the
# interpreter keeps, and still fails a server that buffers more than half of one stream.
MAX_PEAK_GROWTH = 100 * 1024 * 1024
# Warm-up: more changes than a send queue holds (1,024 frames).
WARM_UP_ROWS = 2_000
# The bulk table's sentinel row: a key outside 1..BULK_ROWS, inserted after the bulk.
SENTINEL = -1
# A bound against hanging (the bulk takes seconds), never a measurement of speed.
DELIVERY_TIMEOUT = 240.0


class Received(NamedTuple):
    id: int
    op: str
    key: int
    old_key: int | None
    # len(record.payload) - len(old_record.payload): what the UPDATE appended.
    growth: int | None


async def _read_until(client: RealtimeClient, sentinel_key: int | None, count: int = 0) -> list[Received]:
    """Every broadcast up to and including the one whose record has id `sentinel_key` (or the first
    `count`, which the next read's own checks show to have been all there was), read as fast as the
    socket allows: the server slows a burst to its slowest reader, so a slow test client would measure
    itself. orjson parses a 2 KB frame in microseconds, far less than receiving it costs."""
    received = []
    recv = client.connection.recv
    while True:
        message = orjson.loads(await recv())
        if message["type"] == "heartbeat":
            continue
        assert message["type"] == "broadcast", message
        payload = message["payload"]
        record, old = payload.get("record"), payload.get("old_record")
        key = (record or old)["id"]
        received.append(
            Received(
                message["id"],
                payload["type"],
                key,
                old["id"] if old else None,
                len(record["payload"]) - len(old["payload"]) if record and old else None,
            )
        )
        if key == sentinel_key or len(received) == count:
            return received


@BOTH_MODES
@pytest.mark.timeout(300)
async def test_a_100k_row_transaction_is_delivered_whole_in_bounded_memory_without_starving_others(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    bulk = f"bulk_{uuid.uuid4().hex[:10]}"
    other = f"other_{uuid.uuid4().hex[:10]}"
    bulk_table, other_table = sql.Identifier(bulk), sql.Identifier(other)
    await db.execute(
        sql.SQL("CREATE TABLE public.{} (id integer PRIMARY KEY, payload text NOT NULL)").format(bulk_table)
    )
    # Filled before realtime is enabled: the INSERT itself is not captured.
    await db.execute(
        sql.SQL(
            "INSERT INTO public.{} SELECT i, " + ROW_PAYLOAD + " FROM generate_series(1, %s) AS i"
        ).format(bulk_table),
        (BULK_ROWS,),
    )
    await db.execute("SELECT enable_realtime('public', %s)", (bulk,))
    await db.execute(sql.SQL("CREATE TABLE public.{} (id serial PRIMARY KEY, note text)").format(other_table))
    await db.execute("SELECT enable_realtime('public', %s)", (other,))
    insert_other = sql.SQL("INSERT INTO public.{} (note) VALUES (%s) RETURNING id").format(other_table)
    insert_sentinel = sql.SQL("INSERT INTO public.{} (id, payload) VALUES (%s, 'sentinel')").format(
        bulk_table
    )

    env = {"DATABASE_URL": database_url, "LOG_LEVEL": "warning", **capture_env(database_url)}
    async with server_process(env) as server:
        async with contextlib.AsyncExitStack() as stack:
            # max_size=None: frames are ~2 KB, but nothing here should depend on a client-side limit.
            # Protocol pings off, as on the server: the application heartbeat replaces them.
            clients = [
                await stack.enter_async_context(
                    realtime_client(server.ws_url, max_size=None, ping_interval=None)
                )
                for _ in range(3)
            ]
            readers, watcher = clients[:2], clients[2]
            for reader in readers:
                await reader.subscribe(f"table:public.{bulk}")
            await watcher.subscribe(f"table:public.{other}")

            # Warm-up: a burst larger than a send queue (1,024 frames) through the same path, so that the
            # baseline includes the pool, the encoders, the queues and the transports in use.
            warm_up = [asyncio.create_task(_read_until(reader, None, WARM_UP_ROWS)) for reader in readers]
            await db.execute(
                sql.SQL("UPDATE public.{} SET payload = payload WHERE id <= %s").format(bulk_table),
                (WARM_UP_ROWS,),
            )
            warm_other_id = await _insert_other(db, insert_other, "warm-up")
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                for received in await asyncio.gather(*warm_up):
                    assert {r.op for r in received} == {"UPDATE"}
                assert [r.key for r in await _read_until(watcher, warm_other_id)] == [warm_other_id]

            peak_reset = server.reset_peak_memory()
            before = server.memory()
            deliveries = [asyncio.create_task(_read_until(reader, SENTINEL)) for reader in readers]
            started = time.monotonic()
            # One statement in autocommit: one transaction of BULK_ROWS changes.
            await db.execute(sql.SQL("UPDATE public.{} SET payload = payload || 'x'").format(bulk_table))
            committed = time.monotonic()
            other_id = await _insert_other(db, insert_other, "after the bulk")
            await db.execute(insert_sentinel, (SENTINEL,))
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                # Delivery is in commit order, so the other channel's row, committed after the bulk, may
                # only arrive once the bulk is published: what this proves is that it does arrive, and
                # that the bulk channel's burst does not cut the other channel's subscriber off.
                watched = await _read_until(watcher, other_id)
                watched_at = time.monotonic()
                streams = await asyncio.gather(*deliveries)
            delivered_at = time.monotonic()
            after = server.memory()

            async with httpx.AsyncClient(base_url=server.http_url) as http:
                stats = (await http.get("/api/realtime/stats")).json()

        # The figures first, so that a failure below still shows them.
        peak_growth = after["VmHWM"] - before["VmRSS"]
        mib = 1024 * 1024
        print(
            f"\nbulk of {BULK_ROWS:,} changes x 2 subscribers: UPDATE {committed - started:.1f}s; "
            f"commit -> other channel's row {watched_at - committed:.1f}s, -> both sentinels "
            f"{delivered_at - committed:.1f}s; server RSS {before['VmRSS'] / mib:.0f} MiB before, "
            f"peak {after['VmHWM'] / mib:.0f} MiB (peak growth {peak_growth / mib:.1f} MiB"
            f"{'' if peak_reset else ', VmHWM not reset: counted from start'}), "
            f"{after['VmRSS'] / mib:.0f} MiB after; stats {stats}"
        )
        output = server.output()
        print(output or "(server wrote nothing)")
        assert [(r.op, r.key) for r in watched] == [("INSERT", other_id)]
        for stream in streams:
            assert _bulk_problems(stream[:-1]) == []
            sentinel = stream[-1]
            assert (sentinel.op, sentinel.key) == ("INSERT", SENTINEL)
            # Commit order: the bulk, then the other table's row, then the sentinel.
            assert stream[-2].id < watched[0].id < sentinel.id
        assert streams[0] == streams[1], "the two bulk subscribers received different streams"
        assert stats["slow_consumer_disconnects"] == 0, stats
        assert stats["last_change_id"] == streams[0][-1].id, stats

        assert peak_growth < MAX_PEAK_GROWTH, f"peak RSS grew by {peak_growth / mib:.0f} MiB"
        assert server.stop() == 0
        assert "Traceback" not in output and "level=ERROR" not in output, output


async def _insert_other(db: psycopg.AsyncConnection, statement: sql.Composed, note: str) -> int:
    [[row_id]] = await (await db.execute(statement, (note,))).fetchall()
    return int(row_id)


def _bulk_problems(updates: list[Received]) -> list[str]:
    """What is wrong with the bulk as one subscriber received it, briefly (pytest would print 100,000-item
    diffs): every row's UPDATE exactly once, with consecutive ids (one transaction)."""
    problems = []
    if len(updates) != BULK_ROWS:
        problems.append(f"{len(updates)} changes instead of {BULK_ROWS}")
    not_updates = [r for r in updates if r.op != "UPDATE"]
    if not_updates:
        problems.append(f"{len(not_updates)} are not UPDATEs, e.g. {not_updates[:3]}")
    gaps = [(a.id, b.id) for a, b in itertools.pairwise(updates) if b.id != a.id + 1]
    if gaps:
        problems.append(f"{len(gaps)} breaks in the ids, e.g. {gaps[:5]}")
    keys = [r.key for r in updates]
    missing = set(range(1, BULK_ROWS + 1)).difference(keys)
    if missing or len(set(keys)) != len(keys):
        problems.append(f"{len(missing)} rows missing, {len(keys) - len(set(keys))} repeated")
    wrong = [r for r in updates if r.old_key != r.key or r.growth != 1]
    if wrong:
        problems.append(f"{len(wrong)} UPDATEs whose old_record and record do not match, e.g. {wrong[:3]}")
    return problems
