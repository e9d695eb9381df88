"""TRUNCATE through the client against a real server: a truncated partition is a Change, then a Reset."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

from client_test_support import WAIT, make_client
from fluxbase_realtime_client import Change, Reset
from tests.integration.test_partitions import tree  # noqa: F401 - a fixture
from tests.support.server import ServerThread


async def test_a_truncated_partition_yields_the_change_then_a_reset(
    server: ServerThread,
    db: psycopg.AsyncConnection,
    tree: tuple[str, str, str],  # noqa: F811
) -> None:
    """Rows do not say which partition held them: the stream tells the application to reload, after the
    TRUNCATE (which names the partition) and before what follows it. A whole-table TRUNCATE needs none."""
    root, low, _ = tree
    r = sql.Identifier(root)
    channel = f"table:public.{root}"
    async with make_client(server.ws_url) as client:
        stream = client.changes(channel)
        await stream.subscribed()
        await db.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(low)))
        await db.execute(sql.SQL("TRUNCATE {}").format(r))
        await db.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (1, 'after')").format(r))
        async with asyncio.timeout(WAIT):
            items = [await anext(stream) for _ in range(4)]
    one, reset, whole, after = items
    assert isinstance(one, Change) and one.type == "TRUNCATE" and one.partition == ("public", low)
    assert isinstance(reset, Reset) and reset.channel == channel and low in reset.reason
    assert isinstance(whole, Change) and whole.type == "TRUNCATE" and whole.partition is None
    assert isinstance(after, Change) and after.type == "INSERT" and after.id == whole.id + 1
