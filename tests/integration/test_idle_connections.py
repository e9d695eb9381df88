"""What a connection costs while idle: no task. Requests and queued frames get a task only while there is
work, and everything a connection does still happens in order."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Callable

import psycopg
from psycopg import sql

from tests.conftest import make_settings
from tests.support.client import realtime_client
from tests.support.server import ServerThread

# The tasks a connection can run on the server: its ASGI task (until it is detached), answering its
# requests, writing its queued frames.
CONNECTION_TASKS = {
    "DirectWriteProtocol.run_asgi",
    "WebSocketsSansIOProtocol.run_asgi",
    "Connection._answer_requests",
    "Connection._write_frames",
}


def connection_tasks(server: ServerThread) -> list[str]:
    """The names of the connection tasks running on the server's event loop now."""
    loop = server.server.servers[0].get_loop()

    async def names() -> list[str]:
        return sorted(task.get_coro().__qualname__ for task in asyncio.all_tasks())  # type: ignore[union-attr]

    return [
        name for name in asyncio.run_coroutine_threadsafe(names(), loop).result(5) if name in CONNECTION_TASKS
    ]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll the server's state (it changes on its own thread) until `condition()` holds, for 10 s at most."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition(), what


async def insert(db: psycopg.AsyncConnection, table: str, name: str) -> None:
    await db.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table)), (name,))


async def test_an_idle_subscribed_connection_runs_no_task(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    with ServerThread(make_settings(database_url, realtime_heartbeat_interval=0.2)) as server:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(10)]
            for client in clients:
                await client.subscribe(channel)
            await until(lambda: connection_tasks(server) == [], "the acks were sent and the tasks ended")
            # Broadcasts and heartbeats go straight to an idle socket: still no task.
            await insert(db, table, "one")
            for client in clients:
                [message] = await client.broadcasts(1)
                assert message["payload"]["record"]["name"] == "one"
            for client in clients:
                assert await client.receive(skip_heartbeats=False) == {"type": "heartbeat"}
            assert connection_tasks(server) == []
            assert server.services.hub.connection_count == 10


async def test_a_slow_reader_gets_every_frame_in_order_and_its_writer_task_ends(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    bulk = f"bulk_{uuid.uuid4().hex[:10]}"
    await db.execute(
        sql.SQL("CREATE TABLE public.{} (id serial, name text, blob text)").format(sql.Identifier(bulk))
    )
    await db.execute("SELECT enable_realtime('public', %s)", (bulk,))
    row = sql.SQL("INSERT INTO {} (name, blob) VALUES (%s, repeat(md5(random()::text), 2048))").format(
        sql.Identifier(bulk)
    )
    settings = make_settings(database_url, realtime_send_queue_size=4096, realtime_slow_client_timeout=30)
    with ServerThread(settings) as server:
        # A small receive buffer and max_queue=1: after a few frames this client reads nothing more.
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        async with realtime_client(server.ws_url, sock=raw, max_queue=1, ping_interval=None) as client:
            await client.subscribe(f"table:public.{bulk}")
            [subscriber] = server.services.hub.subscribers()
            written = 0
            # Until the socket stops taking writes and frames wait in the queue, for the writer task.
            while subscriber.room == subscriber.capacity:
                assert written < 2000, "frames were never queued"
                await db.execute(row, (str(written),))
                written += 1
                await asyncio.sleep(0.005)
            assert "Connection._write_frames" in connection_tasks(server)
            for _ in range(20):  # more, behind those queued
                await db.execute(row, (str(written),))
                written += 1
            received = await client.broadcasts(written)
            assert [m["payload"]["record"]["name"] for m in received] == [str(n) for n in range(written)]
            ids = [m["id"] for m in received]
            assert ids == sorted(ids) and len(set(ids)) == written
            await until(lambda: connection_tasks(server) == [], "the writer task ended once drained")
            assert subscriber.room == subscriber.capacity
            # Later frames take the direct path again.
            await db.execute(row, ("after",))
            [last] = await client.broadcasts(1)
            assert last["payload"]["record"]["name"] == "after"
            assert connection_tasks(server) == []
    assert server.services.hub.slow_consumer_disconnects == 0


async def test_requests_sent_at_once_are_answered_in_order(server: ServerThread, table: str) -> None:
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as client:
        # All sent before the first answer: the server reads them while still answering the first.
        await client.send(type="subscribe", channel=channel, ref="1")
        await client.send_raw("not json")
        await client.send(type="unsubscribe", channel="table:public.not_subscribed", ref="3")
        await client.send(type="subscribe", channel=channel, ref="4")
        await client.send(type="unsubscribe", channel=channel, ref="5")
        await client.send(type="unsubscribe", channel=channel, ref="6")
        replies = [await client.receive() for _ in range(6)]
    assert [(r["type"], r.get("ref")) for r in replies] == [
        ("ack", "1"),
        ("error", None),
        ("error", "3"),
        ("ack", "4"),
        ("ack", "5"),
        ("error", "6"),
    ]


async def test_a_client_gone_while_its_request_is_answered_is_forgotten(
    database_url: str, table: str
) -> None:
    channel = f"table:public.{table}"
    with ServerThread(make_settings(database_url)) as server:
        hub, limits = server.services.hub, server.services.limits
        for _ in range(5):
            async with realtime_client(server.ws_url) as client:
                await client.send(type="subscribe", channel=channel)
            # closed without waiting for the ack
        await until(
            lambda: (
                (hub.connection_count, hub.channel_count, limits.connections_from("127.0.0.1")) == (0, 0, 0)
            ),
            "every connection, subscription and lease released",
        )
        await until(lambda: connection_tasks(server) == [], "no task left behind")


async def test_served_through_asgi_under_another_websocket_protocol(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    """Without app.wire's protocol (no direct path, no detaching), the ASGI task serves the connection."""
    channel = f"table:public.{table}"
    server = ServerThread(make_settings(database_url))
    server.server.config.ws = "websockets-sansio"
    with server:
        async with realtime_client(server.ws_url) as client:
            await client.subscribe(channel, ref="a")
            await insert(db, table, "via asgi")
            [message] = await client.broadcasts(1)
            assert message["payload"]["record"]["name"] == "via asgi"
            await client.send_raw("not json")
            assert (await client.receive())["type"] == "error"
            assert connection_tasks(server) == ["WebSocketsSansIOProtocol.run_asgi"]
        hub = server.services.hub
        await until(lambda: (hub.connection_count, hub.channel_count) == (0, 0), "the connection released")
