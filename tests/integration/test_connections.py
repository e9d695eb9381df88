"""Heartbeats, stats, slow consumers, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid

import httpx
import psycopg
import pytest
from psycopg import sql
from websockets.exceptions import ConnectionClosed

from tests.conftest import make_settings
from tests.support.client import RealtimeClient, realtime_client
from tests.support.server import ServerThread


async def test_heartbeats_arrive_without_client_traffic(database_url: str) -> None:
    with ServerThread(make_settings(database_url, realtime_heartbeat_interval=0.1)) as server:
        async with realtime_client(server.ws_url) as client:
            beats = [await client.receive(skip_heartbeats=False) for _ in range(3)]
    assert beats == [{"type": "heartbeat"}] * 3


async def test_stats_count_connections_and_channels(database_url: str, db: psycopg.AsyncConnection) -> None:
    tables = []
    for _ in range(2):
        name = f"stats_{uuid.uuid4().hex[:10]}"
        await db.execute(sql.SQL("CREATE TABLE public.{} (id int)").format(sql.Identifier(name)))
        await db.execute("SELECT enable_realtime('public', %s)", (name,))
        tables.append(name)

    with ServerThread(make_settings(database_url)) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:

            async def stats() -> dict[str, int]:
                response = await http.get("/api/realtime/stats")
                assert response.status_code == 200
                body: dict[str, int] = response.json()
                return body

            assert (await stats())["connections"] == 0
            async with contextlib.AsyncExitStack() as stack:
                clients = [await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(3)]
                await clients[0].subscribe(f"table:public.{tables[0]}")
                await clients[1].subscribe(f"table:public.{tables[0]}")
                await clients[1].subscribe(f"table:public.{tables[1]}")
                current = await stats()
                assert (current["connections"], current["channels"]) == (3, 2)
                await clients[1].send(type="unsubscribe", channel=f"table:public.{tables[1]}")
                await clients[1].receive()
                current = await stats()
                assert (current["connections"], current["channels"]) == (3, 1)
            # Closing is asynchronous on the server side; wait for it to notice rather than sleep.
            for _ in range(500):
                current = await stats()
                if current["connections"] == 0:
                    break
                await asyncio.sleep(0.01)
            assert (current["connections"], current["channels"]) == (0, 0)


async def test_health_and_readiness(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": True, "listener": True}


async def test_a_client_that_never_reads_does_not_hold_back_the_others(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    shared = f"table:public.{table}"
    # Only the stalled client receives the bulk table's large rows: they fill its socket buffers quickly,
    # without making the 50 readers download megabytes each.
    bulk = f"bulk_{uuid.uuid4().hex[:10]}"
    await db.execute(sql.SQL("CREATE TABLE public.{} (id serial, blob text)").format(sql.Identifier(bulk)))
    await db.execute("SELECT enable_realtime('public', %s)", (bulk,))
    settings = make_settings(database_url, realtime_send_queue_size=8, realtime_slow_client_timeout=0.2)
    with ServerThread(settings) as server:
        # A small receive buffer and max_queue=1: after a few frames this client reads nothing more.
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        async with contextlib.AsyncExitStack() as stack:
            stalled = await stack.enter_async_context(
                realtime_client(server.ws_url, sock=raw, max_queue=1, ping_interval=None)
            )
            await stalled.subscribe(shared)
            await stalled.subscribe(f"table:public.{bulk}")
            readers = [await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(50)]
            for reader in readers:
                await reader.subscribe(shared)

            written = 0
            while server.services.hub.slow_consumer_disconnects == 0:
                assert written < 3000, "the stalled client was never closed"
                async with db.transaction():
                    await db.execute(
                        sql.SQL("INSERT INTO {} (blob) VALUES (repeat(md5(random()::text), 2048))").format(
                            sql.Identifier(bulk)
                        )
                    )
                    await db.execute(
                        sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table)),
                        (str(written),),
                    )
                written += 1
                received = await asyncio.gather(*(r.broadcasts(1) for r in readers))
                assert all(m["payload"]["record"]["name"] == str(written - 1) for [m] in received)
            await db.execute(
                sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(sql.Identifier(table))
            )
            for reader in readers:
                [last] = await reader.broadcasts(1)
                assert last["payload"]["record"]["name"] == "sentinel"

            # The stalled client, once it reads again, finds the close code after what was in flight.
            code = await _close_code(stalled)
    assert code == 1013
    assert server.services.hub.slow_consumer_disconnects == 1


async def _close_code(client: RealtimeClient) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await client.receive()
    return client.connection.close_code


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("stop", "exit_code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
async def test_sigterm_or_ctrl_c_closes_connections_with_1001_and_exits_quietly(
    database_url: str, stop: signal.Signals, exit_code: int
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(600):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                assert process.poll() is None, "the server exited during startup"
                await asyncio.sleep(0.05)
        async with realtime_client(f"ws://127.0.0.1:{port}/realtime") as client:
            await client.send(type="unsubscribe", channel="table:public.nothing")
            await client.receive()
            process.send_signal(stop)
            code = await _close_code(client)
        assert code == 1001
        _, errors = process.communicate(timeout=30)
        assert process.returncode == exit_code
        assert "Traceback" not in errors  # Ctrl+C in `make run` is a normal stop, not a crash
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
