"""The listener's connection dies: readiness says so, and nothing committed meanwhile is lost."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
from psycopg import sql

from tests.conftest import make_settings
from tests.support.client import realtime_client
from tests.support.metrics import scrape, value
from tests.support.server import ServerThread

TERMINATE_LISTENERS = """
    SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = current_database() AND application_name = 'fluxbase-realtime-listener'
"""


async def _wait_for_readiness(http: httpx.AsyncClient, status: int) -> dict[str, object]:
    for _ in range(1500):
        response = await http.get("/readyz")
        if response.status_code == status:
            body: dict[str, object] = response.json()
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"/readyz never answered {status}")


async def test_changes_committed_while_the_listener_is_down_arrive_once_in_order(
    server_url: str, database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    database = (await (await db.execute("SELECT current_database()")).fetchone() or [""])[0]

    def allow(value: str) -> sql.Composed:
        return sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL(value)
        )

    t = sql.Identifier(table)
    with ServerThread(make_settings(database_url)) as server:
        async with (
            httpx.AsyncClient(base_url=server.http_url) as http,
            realtime_client(server.ws_url) as client,
            # A database cannot refuse connections to itself: switch it from the maintenance database.
            await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin,
        ):
            await client.subscribe(f"table:public.{table}")
            await _wait_for_readiness(http, 200)
            try:
                # Keep the listener from reconnecting until the writes are done.
                await admin.execute(allow("false"))
                terminated = (await (await db.execute(TERMINATE_LISTENERS)).fetchone() or [0])[0]
                assert terminated >= 1
                down = await _wait_for_readiness(http, 503)
                assert down == {"status": "not ready", "database": True, "listener": False}
                for n in range(300):
                    await db.execute(
                        sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(t), (f"while down {n}",)
                    )
            finally:
                await admin.execute(allow("true"))
            await _wait_for_readiness(http, 200)
            for n in range(200):
                await db.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(t), (f"after {n}",))
            await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(t))
            messages = await client.until_broadcast(lambda m: m["payload"]["record"]["name"] == "sentinel")
            samples = await scrape(http)
    # One loss, one reconnect (the attempts refused meanwhile are not reconnects); nothing left behind.
    assert value(samples, "fluxbase_realtime_listener_reconnects_total") == 1
    assert value(samples, "fluxbase_realtime_listener_connected") == 1
    assert value(samples, "fluxbase_realtime_feed_lag_changes") == 0
    names = [m["payload"]["record"]["name"] for m in messages]
    assert names == [f"while down {n}" for n in range(300)] + [f"after {n}" for n in range(200)] + [
        "sentinel"
    ]
    ids = [m["id"] for m in messages]
    assert ids == sorted(set(ids))
