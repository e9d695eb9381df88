"""Filtered subscriptions over real sockets: view semantics, events, columns, several subscriptions per
table on one connection, replay, errors, and a client that keeps exactly `SELECT … WHERE filter`.

Every stream is read up to a sentinel change that the subscription can see, so absence is proved by
what arrived before it, never by waiting.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import jwt
import psycopg
import pytest
from psycopg import sql

from tests.conftest import JWT_SECRET
from tests.support.client import RealtimeClient, realtime_client
from tests.support.modes import BOTH_MODES
from tests.support.server import ServerThread

# Filters mean the same whichever mode captured the change (issue 12).
pytestmark = BOTH_MODES

SENTINEL = "sentinel"


def is_sentinel(message: dict[str, Any]) -> bool:
    payload = message["payload"]
    return (payload.get("record") or payload.get("old_record") or {}).get("name") == SENTINEL


async def until_sentinel(client: RealtimeClient) -> list[dict[str, Any]]:
    return (await client.until_broadcast(is_sentinel))[:-1]


def summary(messages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (m["payload"]["type"], (m["payload"].get("record") or m["payload"]["old_record"])["id"])
        for m in messages
    ]


async def run(db: psycopg.AsyncConnection, table: str, statement: str, *params: Any) -> None:
    await db.execute(sql.SQL(statement).format(t=sql.Identifier(table)), params or None)


async def sentinel(db: psycopg.AsyncConnection, table: str, price: int = 1000) -> None:
    await run(db, table, "INSERT INTO {t} (id, name, price) VALUES (1000000, %s, %s)", SENTINEL, price)


async def test_rows_move_in_and_out_of_view(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}", filter="price=gt.10")
        await run(db, table, "INSERT INTO {t} (id, name, price) VALUES (1, 'low', 5), (2, 'high', 20)")
        await run(db, table, "UPDATE {t} SET price = 15 WHERE id = 1")  # moves in
        await run(db, table, "UPDATE {t} SET price = 25 WHERE id = 2")  # stays in
        await run(db, table, "UPDATE {t} SET price = 3 WHERE id = 1")  # moves out
        await run(db, table, "UPDATE {t} SET price = 4 WHERE id = 1")  # stays out
        await run(db, table, "DELETE FROM {t} WHERE id IN (1, 2)")
        await sentinel(db, table)
        received = await until_sentinel(client)
    assert summary(received) == [("INSERT", 2), ("INSERT", 1), ("UPDATE", 2), ("DELETE", 1), ("DELETE", 2)]
    _, moved_in, updated, moved_out, deleted = (m["payload"] for m in received)
    assert moved_in["record"]["price"] == 15 and "old_record" not in moved_in
    assert (updated["old_record"]["price"], updated["record"]["price"]) == (20, 25)
    assert moved_out["old_record"] == {"id": 1, "name": "low", "price": 15, "data": None}
    assert "record" not in moved_out and deleted["old_record"]["price"] == 25


async def test_and_or_nesting_and_not(server: ServerThread, db: psycopg.AsyncConnection, table: str) -> None:
    channel = f"table:public.{table}"
    spelled = 'name=neq.skip,or=(price.lt.5,and(price.gte.100,name.not.like.*x*),name.in.("a,b",c))'
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel, filter=spelled)
        await run(
            db,
            table,
            "INSERT INTO {t} (id, name, price) VALUES (1, 'x', 1), (2, 'skip', 1), (3, 'y', 200), "
            "(4, 'xy', 200), (5, 'a,b', 50), (6, 'c', 50), (7, 'a', 50), (8, NULL, 1)",
        )
        await sentinel(db, table)
        received = await until_sentinel(client)
    # Row 8: NULL <> 'skip' is NULL, so it is not selected, as in a WHERE clause.
    assert sorted(id for _, id in summary(received)) == [1, 3, 5, 6]


async def test_events_are_chosen_after_view_translation(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as deletes, realtime_client(server.ws_url) as inserts:
        await deletes.subscribe(channel, filter="price=gt.10", events=["DELETE"])
        await inserts.subscribe(channel, events=["insert"])
        await run(db, table, "INSERT INTO {t} (id, name, price) VALUES (1, 'a', 20), (2, 'b', 20)")
        await run(db, table, "UPDATE {t} SET price = 1 WHERE id = 1")  # out of view: a DELETE
        await run(db, table, "UPDATE {t} SET price = 30 WHERE id = 2")
        await run(db, table, "DELETE FROM {t} WHERE id = 2")
        await sentinel(db, table)
        await run(db, table, "DELETE FROM {t} WHERE name = %s", SENTINEL)
        assert summary(await until_sentinel(deletes)) == [("DELETE", 1), ("DELETE", 2)]
        assert summary(await until_sentinel(inserts)) == [("INSERT", 1), ("INSERT", 2)]


async def test_columns_always_carry_the_primary_key(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    async with realtime_client(server.ws_url) as client:
        ack = await client.subscribe(f"table:public.{table}", columns=["name"], ref="c1")
        assert ack == {"type": "ack", "channel": f"table:public.{table}", "ref": "c1", "since": ack["since"]}
        await run(db, table, "INSERT INTO {t} (id, name, price) VALUES (1, 'a', 5)")
        await run(db, table, "UPDATE {t} SET price = 6 WHERE id = 1")
        await run(db, table, "DELETE FROM {t} WHERE id = 1")
        inserted, updated, deleted = (m["payload"] for m in await client.broadcasts(3))
    assert inserted["record"] == {"id": 1, "name": "a"}
    assert updated["record"] == updated["old_record"] == {"id": 1, "name": "a"}
    assert deleted["old_record"] == {"id": 1, "name": "a"}


async def test_several_subscriptions_to_one_table_on_one_connection(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as client:
        ack = await client.subscribe(channel, subscription="list", filter="price=gt.10", ref=1)
        assert ack == {
            "type": "ack",
            "channel": channel,
            "subscription": "list",
            "ref": 1,
            "since": ack["since"],
        }
        await client.subscribe(channel, subscription="detail", filter="id=eq.2", columns=["price"])
        await client.subscribe(channel)  # and the channel's own subscription, unfiltered
        await run(db, table, "INSERT INTO {t} (id, name, price) VALUES (1, 'a', 20), (2, 'b', 5)")
        got = [await client.receive() for _ in range(4)]
        by_subscription = {(m.get("subscription"), m["payload"]["record"]["id"]): m for m in got}
        assert set(by_subscription) == {("list", 1), (None, 1), (None, 2), ("detail", 2)}
        assert by_subscription[("detail", 2)]["payload"]["record"] == {"id": 2, "price": 5}
        assert list(by_subscription[("list", 1)])[:2] == ["type", "subscription"]
        await client.send(type="unsubscribe", channel=channel, subscription="detail", ref="u")
        assert await client.receive() == {
            "type": "ack",
            "channel": channel,
            "subscription": "detail",
            "ref": "u",
        }
        await client.send(type="unsubscribe", channel=channel, subscription="detail", ref="again")
        refused = await client.receive()
        assert refused["type"] == "error" and refused["ref"] == "again"
        assert f"not subscribed to {channel} (subscription 'detail')" in refused["error"]
        await run(db, table, "UPDATE {t} SET price = 50")
        got = [await client.receive() for _ in range(4)]
    assert sorted(
        (m.get("subscription") or "", m["payload"]["type"], m["payload"]["record"]["id"]) for m in got
    ) == [
        ("", "UPDATE", 1),
        ("", "UPDATE", 2),
        ("list", "INSERT", 2),  # moved into the list's view
        ("list", "UPDATE", 1),
    ]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"filter": "nope=eq.1"}, "invalid filter: column"),
        ({"filter": "price=gt.cheap"}, 'invalid filter: invalid input syntax for type numeric: "cheap"'),
        ({"filter": "price=about.5"}, "invalid filter: unknown operator 'about'"),
        ({"filter": "or=(price.gt.5"}, "invalid filter: unclosed parenthesis"),
        ({"filter": "price=gt." + "9" * 2000}, "filter is too long: 2009 characters, at most 1024"),
        ({"filter": ",".join(["price=gt.1"] * 33)}, "too many conditions: at most 32"),
        ({"filter": "name=like.1,price=like.1"}, "invalid filter: operator does not exist: numeric"),
        ({"filter": 5}, "filter must be a string"),
        (
            {"events": ["UPSERT"]},
            "events must be a list of INSERT, UPDATE, DELETE, TRUNCATE; 'UPSERT' is not one",
        ),
        ({"events": []}, "events must be a list"),
        ({"columns": ["name", "nope"]}, "unknown column 'nope' in columns"),
        ({"columns": "name"}, "columns must be a non-empty list"),
        ({"subscription": ""}, "subscription must not be empty"),
    ],
)
async def test_refusals_say_why(
    server: ServerThread, table: str, options: dict[str, Any], error: str
) -> None:
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as client:
        await client.send(type="subscribe", channel=channel, ref="r", **options)
        refused = await client.receive()
        assert refused["type"] == "error" and refused["ref"] == "r", refused
        assert error in refused["error"]
        await client.subscribe(channel)  # the connection goes on


async def test_replay_is_filtered_and_translated_like_live(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as watcher:
        await watcher.subscribe(channel)
        await run(db, table, "INSERT INTO {t} (id, name, price) VALUES (1, 'a', 1)")
        [before] = await watcher.broadcasts(1)
    await run(db, table, "INSERT INTO {t} (id, name, price) VALUES (2, 'b', 20), (3, 'c', 1)")
    await run(db, table, "UPDATE {t} SET price = 30 WHERE id = 1")  # into view
    await run(db, table, "UPDATE {t} SET price = 2 WHERE id = 2")  # out of view
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel, since=before["id"], filter="price=gt.10", subscription="s")
        await run(db, table, "UPDATE {t} SET price = 40 WHERE id = 3")  # live, into view
        await sentinel(db, table)
        received = await until_sentinel(client)
    assert summary(received) == [("INSERT", 2), ("INSERT", 1), ("DELETE", 2), ("INSERT", 3)]
    assert all(m["subscription"] == "s" for m in received)


async def test_a_client_applying_changes_holds_exactly_what_select_where_returns(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    spelled = "or=(price.gt.50,and(name.like.*a*,price.lte.20))"
    where = "price > 50 OR (name LIKE '%%a%%' AND price <= 20)"
    rng = random.Random(10)
    names = ["a", "b", "ab", "ba", "c", None]
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}", filter=spelled)
        for _ in range(150):
            action = rng.random()
            if action < 0.4:
                rows = [(rng.choice(names), rng.randint(0, 100)) for _ in range(rng.randint(1, 3))]
                values = sql.SQL(", ").join(sql.SQL("(%s, %s)") for _ in rows)
                await db.execute(
                    sql.SQL("INSERT INTO {} (name, price) VALUES {}").format(sql.Identifier(table), values),
                    [v for row in rows for v in row],
                )
            elif action < 0.8:
                await run(
                    db,
                    table,
                    "UPDATE {t} SET price = %s, name = coalesce(%s, name) WHERE id %% 7 = %s",
                    rng.randint(0, 100),
                    rng.choice(names),
                    rng.randint(0, 6),
                )
            else:
                await run(db, table, "DELETE FROM {t} WHERE id %% 11 = %s", rng.randint(0, 10))
        await sentinel(db, table)
        held: dict[int, dict[str, Any]] = {}
        for message in await until_sentinel(client):
            payload = message["payload"]
            if payload["type"] == "DELETE":
                held.pop(payload["old_record"]["id"])
            else:
                assert (payload["type"] == "INSERT") == (payload["record"]["id"] not in held), payload
                held[payload["record"]["id"]] = payload["record"]
    rows = await (
        await db.execute(
            sql.SQL(
                "SELECT id, to_jsonb(t) FROM {} t WHERE (" + where + ") AND name IS DISTINCT FROM %s"
            ).format(sql.Identifier(table)),
            (SENTINEL,),
        )
    ).fetchall()
    assert held == {row_id: record for row_id, record in rows}
    assert len(held) > 5  # the burst left rows in view


ALICE, BOB = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))


def token(sub: str) -> str:
    claims = {"exp": int(time.time()) + 600, "role": "authenticated", "sub": sub}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def test_filters_and_columns_under_row_level_security(
    server: ServerThread, db: psycopg.AsyncConnection
) -> None:
    name = f"notes_{uuid.uuid4().hex[:8]}"
    t = sql.Identifier(name)
    for statement in (
        "CREATE TABLE {} (id int PRIMARY KEY, owner uuid, name text, price int, secret text)",
        "ALTER TABLE {} ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY own ON {} FOR SELECT TO authenticated USING "
        "(owner = nullif(current_setting('request.jwt.claim.sub', true), '')::uuid)",
        "GRANT SELECT (id, owner, name, price) ON {} TO authenticated",
    ):
        await db.execute(sql.SQL(statement).format(t))
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    channel = f"table:public.{name}"
    async with realtime_client(f"{server.ws_url}?token={token(ALICE)}") as alice:
        for options, error in (
            (
                {"filter": "secret=eq.x"},
                "invalid filter: column 'secret' is not visible to role 'authenticated'",
            ),
            ({"columns": ["secret"]}, "column 'secret' in columns is not visible to role 'authenticated'"),
        ):
            await alice.send(type="subscribe", channel=channel, **options)
            refused = await alice.receive()
            assert refused["type"] == "error" and error in refused["error"], refused
        await alice.subscribe(channel, filter="price=gt.10", columns=["price"])
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, 'hidden')").format(t)
        for row in ((1, ALICE, "a", 20), (2, BOB, "b", 20), (3, ALICE, "c", 5), (4, ALICE, SENTINEL, 100)):
            await db.execute(insert, row)
        await db.execute(sql.SQL("UPDATE {} SET price = 1 WHERE id = 1").format(t))  # out of the filter
        await db.execute(sql.SQL("UPDATE {} SET owner = %s WHERE id = 4").format(t), (BOB,))  # out of policy
        inserted, sentinel_row, moved_out, hidden = (m["payload"] for m in await alice.broadcasts(4))
    assert inserted["record"] == {"id": 1, "price": 20}
    assert sentinel_row["record"] == {"id": 4, "price": 100}
    # Out of the filter: the old record (its selected columns); out of the policies: only the key.
    assert (moved_out["type"], moved_out["old_record"]) == ("DELETE", {"id": 1, "price": 20})
    assert (hidden["type"], hidden["old_record"]) == ("DELETE", {"id": 4})


async def test_a_truncate_reaches_filtered_views(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel, filter="price=gt.10", subscription="v")
        await client.subscribe(channel, filter="price=gt.10", events=["INSERT"], subscription="inserts")
        await run(db, table, "INSERT INTO {t} (id, name, price) VALUES (1, 'a', 5)")
        await run(db, table, "TRUNCATE {t}")
        await sentinel(db, table)
        got = [await client.receive() for _ in range(3)]
    # Row 1 was never in view; the TRUNCATE empties every view (the INSERT-only one does not ask for it).
    assert sorted((m["subscription"], m["payload"]["type"]) for m in got[1:]) == [
        ("inserts", "INSERT"),
        ("v", "INSERT"),
    ]
    assert got[0] == {
        "type": "broadcast",
        "subscription": "v",
        "channel": channel,
        "id": got[0]["id"],
        "payload": {"type": "TRUNCATE", "table": table, "schema": "public"},
    }
