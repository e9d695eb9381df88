"""TRUNCATE reaches subscribers as one change with no record (sql/capture.sql)."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from tests.integration.test_capture import _realtime_tables
from tests.integration.test_partitions import tree  # noqa: F401 - a fixture
from tests.integration.test_rls import (
    ALICE,
    BOB,
    _insert,
    _subscribed,
    _summary,
    _until_sentinel,
    docs,  # noqa: F401 - a fixture
    token,
)
from tests.support.client import realtime_client
from tests.support.modes import BOTH_MODES
from tests.support.server import ServerThread

TRUNCATE_TRIGGER = (
    "SELECT tgname FROM pg_trigger WHERE tgrelid = format('public.%%I', %s::text)::regclass"
    " AND tgfoid = 'public.notify_table_change()'::regprocedure AND tgtype = 32"
)


@BOTH_MODES
async def test_a_truncate_is_one_change_without_a_record_and_is_replayed(
    server: ServerThread, db: psycopg.AsyncConnection, table: str, capture_mode: str
) -> None:
    t = sql.Identifier(table)
    # information_schema.triggers shows no TRUNCATE trigger (the standard has none); pg_trigger does, in
    # trigger mode (logical mode publishes TRUNCATE instead: no trigger at all).
    assert ("public", table, f"{table}_truncate_notify_change") not in await _realtime_tables(db)
    assert await (await db.execute(TRUNCATE_TRIGGER, (table,))).fetchall() == (
        [(f"{table}_truncate_notify_change",)] if capture_mode == "trigger" else []
    )
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('before'), ('also before')").format(t))
        await db.execute(sql.SQL("TRUNCATE {}").format(t))
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(t))
        live = await client.broadcasts(4)
        raw = live[2]
    assert [m["payload"]["type"] for m in live] == ["INSERT", "INSERT", "TRUNCATE", "INSERT"]
    assert raw == {
        "type": "broadcast",
        "channel": f"table:public.{table}",
        "id": live[1]["id"] + 1,
        "payload": {"type": "TRUNCATE", "table": table, "schema": "public"},
    }
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}", since=live[0]["id"])
        replayed = await client.broadcasts(3)
    assert replayed == live[1:]


@BOTH_MODES
async def test_a_partitioned_table_reports_one_truncate_on_its_own_channel(
    server: ServerThread,
    db: psycopg.AsyncConnection,
    tree: tuple[str, str, str],  # noqa: F811
    capture_mode: str,
) -> None:
    root = tree[0]
    r = sql.Identifier(root)
    assert await (await db.execute(TRUNCATE_TRIGGER, (root,))).fetchall() == (
        [(f"{root}_truncate_notify_change",)] if capture_mode == "trigger" else []
    )
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{root}")
        await db.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (1, 'low'), (150, 'deep')").format(r))
        await db.execute(sql.SQL("TRUNCATE {}").format(r))  # empties both partitions
        await db.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (2, 'sentinel')").format(r))
        received = await client.until_broadcast(
            lambda m: (m["payload"].get("record") or {}).get("v") == "sentinel"
        )
    assert [(m["payload"]["type"], m["payload"]["table"]) for m in received] == [
        ("INSERT", root),
        ("INSERT", root),
        ("TRUNCATE", root),
        ("INSERT", root),
    ]


@BOTH_MODES
async def test_a_truncate_goes_to_every_subscriber_that_may_select_the_table(
    server: ServerThread,
    db: psycopg.AsyncConnection,
    docs: str,  # noqa: F811
) -> None:
    """Alice's row is hers alone; the TRUNCATE says nothing about it, and reaches alice and bob."""
    async with _subscribed(server, docs, alice=token(ALICE), bob=token(BOB)) as clients:
        await _insert(db, docs, owner=ALICE, title="alice's")
        await db.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(docs)))
        for owner in (ALICE, BOB):
            await _insert(db, docs, owner=owner, title="sentinel")
        alice = await _until_sentinel(clients["alice"])
        bob = await _until_sentinel(clients["bob"])
    assert _summary(alice) == [("INSERT", "alice's"), ("TRUNCATE", None)]
    assert _summary(bob) == [("TRUNCATE", None)]


@BOTH_MODES
async def test_an_inheritance_parent_and_its_children_each_report_their_own_truncate(
    server: ServerThread, db: psycopg.AsyncConnection
) -> None:
    parent = f"parent_{uuid.uuid4().hex[:8]}"
    child = f"{parent}_child"
    p, c = sql.Identifier(parent), sql.Identifier(child)
    await db.execute(sql.SQL("CREATE TABLE {} (id int, v text)").format(p))
    await db.execute(sql.SQL("CREATE TABLE {} () INHERITS ({})").format(c, p))
    for name in (parent, child):
        await db.execute("SELECT enable_realtime('public', %s)", (name,))
    async with realtime_client(server.ws_url) as to_parent, realtime_client(server.ws_url) as to_child:
        await to_parent.subscribe(f"table:public.{parent}")
        await to_child.subscribe(f"table:public.{child}")
        await db.execute(sql.SQL("TRUNCATE {}").format(p))
        for table in (p, c):
            await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'sentinel')").format(table))
        got = [[m["payload"]["type"] for m in await client.broadcasts(2)] for client in (to_parent, to_child)]
    assert got == [["TRUNCATE", "INSERT"], ["TRUNCATE", "INSERT"]]


def _is_sentinel(message: dict) -> bool:  # type: ignore[type-arg]
    return (message["payload"].get("record") or {}).get("v") == "sentinel"


@BOTH_MODES
async def test_a_truncate_naming_one_partition_reaches_the_roots_channel_naming_it(
    server: ServerThread,
    db: psycopg.AsyncConnection,
    tree: tuple[str, str, str],  # noqa: F811
) -> None:
    """Its rows are gone, the other partitions' are not: the event says which partition, once, also when
    a sub-partitioned partition is truncated (its own partitions' triggers fire too) or the root is."""
    root, low, deep = tree
    mid = f"{root}_mid"
    r = sql.Identifier(root)
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{root}")
        await db.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (1, 'low'), (150, 'deep')").format(r))
        await db.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(low)))
        await db.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(mid)))  # deep's trigger fires too
        async with db.transaction():  # a change, then its partition's TRUNCATE, in one transaction
            await db.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (2, 'again')").format(r))
            await db.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(low)))
        await db.execute(sql.SQL("TRUNCATE {}").format(r))  # every partition's trigger fires too
        await db.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (3, 'sentinel')").format(r))
        received = await client.until_broadcast(_is_sentinel)
    summary = [(m["payload"]["type"], m["payload"]["table"], m["payload"].get("partition")) for m in received]
    assert summary == [
        ("INSERT", root, None),
        ("INSERT", root, None),
        ("TRUNCATE", root, {"schema": "public", "table": low}),
        ("TRUNCATE", root, {"schema": "public", "table": mid}),
        ("INSERT", root, None),
        ("TRUNCATE", root, {"schema": "public", "table": low}),
        ("TRUNCATE", root, None),
        ("INSERT", root, None),
    ]
    assert [m["id"] for m in received] == list(range(received[0]["id"], received[0]["id"] + 8))
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{root}", since=received[1]["id"])
        replayed = await client.broadcasts(6)
    assert replayed == received[2:]
    assert deep  # its TRUNCATE is covered by mid's and root's


@BOTH_MODES
async def test_a_partition_created_after_enable_realtime_reports_its_truncate_once_enabled_again(
    server: ServerThread,
    db: psycopg.AsyncConnection,
    tree: tuple[str, str, str],  # noqa: F811
) -> None:
    root = tree[0]
    late = f"{root}_late"
    r, la = sql.Identifier(root), sql.Identifier(late)
    await db.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM (200) TO (300)").format(la, r))
    await db.execute("SELECT enable_realtime('public', %s)", (root,))
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{root}")
        await db.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (250, 'late')").format(r))
        await db.execute(sql.SQL("TRUNCATE {}").format(la))
        await db.execute(sql.SQL("INSERT INTO {} (id, v) VALUES (3, 'sentinel')").format(r))
        received = await client.until_broadcast(_is_sentinel)
    assert [(m["payload"]["type"], m["payload"].get("partition")) for m in received] == [
        ("INSERT", None),
        ("TRUNCATE", {"schema": "public", "table": late}),
        ("INSERT", None),
    ]
    # disable_realtime takes the partitions' triggers away with the rest.
    await db.execute("SELECT disable_realtime('public', %s)", (root,))
    assert await (
        await db.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'fluxbase_realtime_partition_truncate'"
            " AND tgrelid IN (SELECT relid FROM pg_partition_tree(%s::regclass))",
            (root,),
        )
    ).fetchone() == (0,)
