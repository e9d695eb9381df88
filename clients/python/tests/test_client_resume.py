"""The client against a real server that dies: every change exactly once, in order, whatever happens.

A writer inserts continuously while the server is killed (SIGKILL) and restarted on the same port, or
frozen (SIGSTOP) so that only the heartbeat watchdog can tell; the client's stream must end equal to the
table, each row once, in commit order."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import psycopg
from psycopg import sql

from client_test_support import (
    HEARTBEAT,
    SENTINEL,
    WAIT,
    Collector,
    assert_exactly_the_table,
    cut,
    make_client,
    server_env,
    table_rows,
    writing,
)
from fluxbase_realtime_client import Change
from tests.conftest import make_settings
from tests.support.processes import server_process
from tests.support.server import ServerThread


async def test_every_change_arrives_once_in_order_across_two_kills_of_the_server(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    env = server_env(database_url)
    collector = Collector()
    async with server_process(env, "--no-migrate") as first:
        port = first.port
        async with make_client(first.ws_url, HEARTBEAT) as client:
            stream = client.changes(f"table:public.{table}")
            await stream.subscribed()
            consuming = asyncio.create_task(collector.run(stream))
            async with writing(database_url, table) as writer:
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
            # One handshake per server at least; a loaded machine may stall a server past the 0.2 s
            # heartbeat's watchdog and add one more, which must lose and repeat nothing either.
            assert client.connects >= 3
    rows = await table_rows(db, table)
    assert rows[-1][1] == SENTINEL and len(rows) > 150
    assert_exactly_the_table(collector.changes, rows)


async def test_a_frozen_server_is_left_by_the_watchdog_and_the_stream_resumes(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    """SIGSTOP keeps the socket open and silent: no close, no reset; only missing heartbeats tell."""
    collector = Collector()
    left = asyncio.Event()

    def on_status(status: str) -> None:
        if status == "connecting" and collector.changes:
            left.set()

    async with server_process(server_env(database_url), "--no-migrate") as server:
        async with make_client(server.ws_url, HEARTBEAT, on_status=on_status) as client:
            stream = client.changes(f"table:public.{table}")
            await stream.subscribed()
            consuming = asyncio.create_task(collector.run(stream))
            async with writing(database_url, table) as writer:
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
    assert_exactly_the_table(collector.changes, await table_rows(db, table))


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
    async with httpx.AsyncClient(base_url=server.http_url) as http, make_client(server.ws_url) as client:
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


async def test_a_consumer_too_slow_for_the_server_is_closed_and_resumes_without_loss(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    """The consumer stops reading: the client's buffer fills, then the server's queue; the server closes
    the connection as too slow (1013). Once the consumer reads again, the client resumes from the last
    change it handed over."""
    settings = make_settings(
        database_url, realtime_send_queue_size=8, realtime_slow_client_timeout=0.2
    )
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            async with make_client(server.ws_url, buffer_size=4) as client:
                stream = client.changes(f"table:public.{table}")
                await stream.subscribed()
                async with writing(database_url, table, pad=20_000) as writer:
                    await _slow_consumer_closed(http)
                    writer.stop()
                collector = Collector()
                async with asyncio.timeout(WAIT):
                    await collector.run(stream)
                assert client.connects >= 2
    assert_exactly_the_table(collector.changes, await table_rows(db, table))


async def _slow_consumer_closed(http: httpx.AsyncClient) -> None:
    for _ in range(1200):
        if (await http.get("/api/realtime/stats")).json()["slow_consumer_disconnects"] >= 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never closed the stalled consumer")


async def test_after_a_cut_every_stream_is_subscribed_again_within_the_servers_message_rate(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    """Ten streams against a server that takes 5 messages per second: subscribing them all again at once
    would have half of them dropped (`rate_limited`, no answer) and never resumed."""
    names = [f"{table}_{n}" for n in range(10)]
    for name in names:
        create = sql.SQL("CREATE TABLE public.{} (id serial PRIMARY KEY)").format(sql.Identifier(name))
        await db.execute(create)
        await db.execute("SELECT enable_realtime('public', %s)", (name,))

    async def insert_into_each() -> None:
        for name in names:
            await db.execute(sql.SQL("INSERT INTO {} DEFAULT VALUES").format(sql.Identifier(name)))

    with ServerThread(make_settings(database_url, realtime_max_messages_per_second=5)) as server:
        async with make_client(server.ws_url, max_messages_per_second=4) as client:
            streams = [client.changes(f"table:public.{name}") for name in names]
            async with asyncio.timeout(WAIT):
                for stream in streams:
                    await stream.subscribed()
            await insert_into_each()
            async with asyncio.timeout(WAIT):
                before = [await anext(stream) for stream in streams]  # each stream now has a position
            cut(client)
            await insert_into_each()  # committed while the streams are away: each arrives once resumed
            async with asyncio.timeout(WAIT):
                after = [await anext(stream) for stream in streams]
            assert client.connects == 2 and client.last_error is None
    for changes in (before, after):
        assert [c.table for c in changes if isinstance(c, Change)] == names
    assert [(c.record or {})["id"] for c in after if isinstance(c, Change)] == [2] * len(names)
