"""The three change types, exact payloads, ids, channel isolation and fan-out over real sockets."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
from psycopg import sql

from tests.support.client import realtime_client
from tests.support.modes import BOTH_MODES
from tests.support.server import ServerThread

# The same payloads, ids and fan-out whichever mode captured the change (issue 12).
pytestmark = BOTH_MODES


async def test_insert_update_delete_payloads(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as client:
        ack = await client.subscribe(channel)
        # A subscribe from "now" is told where it starts.
        assert ack == {"type": "ack", "channel": channel, "since": ack["since"]} and ack["since"].isdigit()

        await db.execute(
            sql.SQL("INSERT INTO {} (name, price, data) VALUES ('Widget', 9.99, NULL)").format(t)
        )
        await db.execute(sql.SQL("UPDATE {} SET price = 19.5 WHERE name = 'Widget'").format(t))
        await db.execute(sql.SQL("DELETE FROM {} WHERE name = 'Widget'").format(t))
        inserted, updated, deleted = await client.broadcasts(3)

    row = {"id": 1, "name": "Widget", "price": 9.99, "data": None}
    assert inserted == {
        "type": "broadcast",
        "channel": channel,
        "id": inserted["id"],
        "payload": {"type": "INSERT", "table": table, "schema": "public", "record": row},
    }
    assert updated == {
        "type": "broadcast",
        "channel": channel,
        "id": updated["id"],
        "payload": {
            "type": "UPDATE",
            "table": table,
            "schema": "public",
            "record": {**row, "price": 19.5},
            "old_record": row,
        },
    }
    assert deleted == {
        "type": "broadcast",
        "channel": channel,
        "id": deleted["id"],
        "payload": {
            "type": "DELETE",
            "table": table,
            "schema": "public",
            "old_record": {**row, "price": 19.5},
        },
    }
    assert isinstance(inserted["id"], int)
    assert inserted["id"] < updated["id"] < deleted["id"]


async def test_channels_are_isolated(server: ServerThread, db: psycopg.AsyncConnection, table: str) -> None:
    other = f"other_{uuid.uuid4().hex[:10]}"
    await db.execute(
        sql.SQL("CREATE TABLE public.{} (id serial PRIMARY KEY, name text)").format(sql.Identifier(other))
    )
    await db.execute("SELECT enable_realtime('public', %s)", (other,))
    async with realtime_client(server.ws_url) as mine, realtime_client(server.ws_url) as theirs:
        await mine.subscribe(f"table:public.{table}")
        await theirs.subscribe(f"table:public.{other}")
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('for mine')").format(sql.Identifier(table)))
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('for theirs')").format(sql.Identifier(other)))
        # Each sees its own change first: the other table's change, committed in between, never arrives.
        [mine_change] = await mine.broadcasts(1)
        [their_change] = await theirs.broadcasts(1)
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(sql.Identifier(table)))
        [sentinel] = await mine.broadcasts(1)
    assert mine_change["payload"]["record"]["name"] == "for mine"
    assert their_change["payload"]["record"]["name"] == "for theirs"
    assert sentinel["payload"]["record"]["name"] == "sentinel"


async def test_many_subscribers_each_receive_every_change_once_in_order(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    t = sql.Identifier(table)
    clients = [realtime_client(server.ws_url) for _ in range(25)]
    connected = [await c.__aenter__() for c in clients]
    try:
        for client in connected:
            await client.subscribe(channel)

        async def write() -> None:
            for n in range(40):
                await db.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(t), (f"row {n}",))

        await write()
        received = await asyncio.gather(*(client.broadcasts(40) for client in connected))
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)
    expected = [f"row {n}" for n in range(40)]
    for messages in received:
        assert [m["payload"]["record"]["name"] for m in messages] == expected
        ids = [m["id"] for m in messages]
        assert ids == sorted(set(ids))
    assert all([m["id"] for m in messages] == [m["id"] for m in received[0]] for messages in received)


async def test_one_transaction_arrives_whole_and_in_statement_order(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        async with db.transaction():
            await db.execute(
                sql.SQL("INSERT INTO {} (name) SELECT 'n' || g FROM generate_series(1, 5) g").format(t)
            )
            await db.execute(sql.SQL("UPDATE {} SET name = name || '!' WHERE name = 'n3'").format(t))
        messages = await client.broadcasts(6)
    assert [m["payload"]["type"] for m in messages] == ["INSERT"] * 5 + ["UPDATE"]
    # Ids of one transaction are consecutive: nothing else can be numbered in between.
    assert [m["id"] for m in messages] == list(range(messages[0]["id"], messages[0]["id"] + 6))


async def test_subscribe_twice_is_acked_twice_and_delivers_once(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as client:
        first_ack = await client.subscribe(channel, ref="a")
        assert first_ack == {"type": "ack", "channel": channel, "ref": "a", "since": first_ack["since"]}
        # Already live: acked again, with no new position (the client keeps its own).
        assert await client.subscribe(channel, ref=2) == {"type": "ack", "channel": channel, "ref": 2}
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('once')").format(t))
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(t))
        first, second = await client.broadcasts(2)
    assert first["payload"]["record"]["name"] == "once"
    assert second["payload"]["record"]["name"] == "sentinel"


async def test_unsubscribe_stops_delivery(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    other = f"other_{uuid.uuid4().hex[:10]}"
    await db.execute(
        sql.SQL("CREATE TABLE public.{} (id serial PRIMARY KEY, name text)").format(sql.Identifier(other))
    )
    await db.execute("SELECT enable_realtime('public', %s)", (other,))
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel)
        await client.subscribe(f"table:public.{other}")
        await client.send(type="unsubscribe", channel=channel, ref="u1")
        assert await client.receive() == {"type": "ack", "channel": channel, "ref": "u1"}
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('unseen')").format(sql.Identifier(table)))
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(sql.Identifier(other)))
        [message] = await client.broadcasts(1)
    assert message["channel"] == f"table:public.{other}"


async def test_with_compression_negotiated_broadcasts_take_the_queued_path_intact(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    from tests.conftest import make_settings

    t = sql.Identifier(table)
    with ServerThread(make_settings(database_url, realtime_ws_compression=True)) as compressed:
        async with realtime_client(compressed.ws_url, compression="deflate") as client:
            assert client.connection.protocol.extensions, "permessage-deflate was not negotiated"
            await client.subscribe(f"table:public.{table}")
            for n in range(20):
                await db.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(t), (f"z{n}",))
            messages = await client.broadcasts(20)
    assert [m["payload"]["record"]["name"] for m in messages] == [f"z{n}" for n in range(20)]


async def test_the_ack_position_resumes_a_client_cut_off_before_its_first_change(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as client:
        ack = await client.subscribe(channel)
    # Cut off before any change reached it; this one commits while it is away.
    await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('while away')").format(t))
    async with realtime_client(server.ws_url) as client:
        resumed = await client.subscribe(channel, since=ack["since"])
        [missed] = await client.broadcasts(1)
    assert "since" not in resumed  # a resume names its own position
    assert missed["payload"]["record"]["name"] == "while away"
