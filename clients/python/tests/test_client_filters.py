"""Subscribe options through the client: two filtered subscriptions of one table on one socket, each
resumed after a cut with its own position, each change once."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

from client_test_support import WAIT, cut, make_client
from fluxbase_realtime_client import Change, ChangeStream
from tests.support.server import ServerThread


async def _take(stream: ChangeStream, count: int) -> list[Change]:
    async with asyncio.timeout(WAIT):
        items = [await anext(stream) for _ in range(count)]
    assert all(isinstance(item, Change) for item in items), items
    return [item for item in items if isinstance(item, Change)]


async def test_two_filtered_subscriptions_of_one_table_resume_each_from_its_own_position(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    insert = sql.SQL("INSERT INTO {} (name, price) VALUES (%s, %s)").format(sql.Identifier(table))
    channel = f"table:public.{table}"
    async with make_client(server.ws_url) as client:
        cheap = client.changes(channel, filter="price=lt.10", columns=["name"], subscription="cheap")
        dear = client.changes(channel, filter="price=gte.10", events=["INSERT"], subscription="dear")
        await cheap.subscribed()
        await dear.subscribed()
        await db.execute(insert, ("pen", 2))
        await db.execute(insert, ("desk", 200))
        [pen], [desk] = await _take(cheap, 1), await _take(dear, 1)
        cut(client)
        for name, price in (("ink", 3), ("chair", 90), ("clip", 1)):  # while the client is away
            await db.execute(insert, (name, price))
        after_cheap, [chair] = await _take(cheap, 2), await _take(dear, 1)
    assert (pen.subscription, desk.subscription, chair.subscription) == ("cheap", "dear", "dear")
    assert [(c.record or {}).get("name") for c in [pen, *after_cheap]] == ["pen", "ink", "clip"]
    assert all(set(c.record or {}) == {"id", "name"} for c in [pen, *after_cheap])  # columns + the key
    assert [(c.record or {})["name"] for c in (desk, chair)] == ["desk", "chair"]
    assert client.connects == 2
