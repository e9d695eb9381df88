"""Partitioned tables (sql/capture_triggers.sql): their changes, from any partition at any
depth, are reported on the partitioned table's channel, checked against its policies and privileges; a
partition's own channel is refused with the one to use."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from tests.integration.test_rls import ALICE, BOB, SUB, token
from tests.support.client import realtime_client
from tests.support.modes import BOTH_MODES
from tests.support.server import ServerThread


@pytest.fixture
async def tree(db: psycopg.AsyncConnection) -> tuple[str, str, str]:
    """(root, low, deep): root partitioned by range, `low` a leaf for ids 0-99, and `deep` a leaf of a
    partitioned partition for ids 100-199; realtime enabled on the root only."""
    root = f"tree_{uuid.uuid4().hex[:8]}"
    low, mid, deep = f"{root}_low", f"{root}_mid", f"{root}_deep"
    r, lo, mi, de = (sql.Identifier(n) for n in (root, low, mid, deep))
    for statement in (
        sql.SQL("CREATE TABLE {} (id int, owner uuid, v text) PARTITION BY RANGE (id)").format(r),
        sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM (0) TO (100)").format(lo, r),
        sql.SQL(
            "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (id)"
        ).format(mi, r),
        sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM (100) TO (200)").format(de, mi),
    ):
        await db.execute(statement)
    await db.execute("SELECT enable_realtime('public', %s)", (root,))
    return root, low, deep


async def _insert(
    db: psycopg.AsyncConnection, table: str, id_: int, v: str, owner: str | None = None
) -> None:
    await db.execute(
        sql.SQL("INSERT INTO {} (id, owner, v) VALUES (%s, %s, %s)").format(sql.Identifier(table)),
        (id_, owner, v),
    )


@BOTH_MODES
async def test_every_partition_reports_on_the_partitioned_tables_channel(
    server: ServerThread, db: psycopg.AsyncConnection, tree: tuple[str, str, str]
) -> None:
    root, low, deep = tree
    channel = f"table:public.{root}"
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel)
        await _insert(db, root, 1, "via root")
        await _insert(db, low, 2, "into a leaf")
        await _insert(db, deep, 150, "two levels down")
        await db.execute(sql.SQL("UPDATE {} SET v = 'updated' WHERE id = 150").format(sql.Identifier(deep)))
        received = await client.broadcasts(4)
    assert [(m["channel"], m["payload"]["type"], m["payload"]["record"]["v"]) for m in received] == [
        (channel, "INSERT", "via root"),
        (channel, "INSERT", "into a leaf"),
        (channel, "INSERT", "two levels down"),
        (channel, "UPDATE", "updated"),
    ]
    assert {m["payload"]["table"] for m in received} == {root}


@BOTH_MODES
@pytest.mark.parametrize("which", ["low", "deep"])
async def test_a_partitions_own_channel_is_refused_with_the_one_to_use(
    server: ServerThread, db: psycopg.AsyncConnection, tree: tuple[str, str, str], which: str
) -> None:
    root, low, deep = tree
    partition = low if which == "low" else deep
    async with realtime_client(server.ws_url) as client:
        await client.send(type="subscribe", channel=f"table:public.{partition}", ref="p")
        refusal = await client.receive()
        await client.subscribe(f"table:public.{root}")
        await _insert(db, partition, 50 if which == "low" else 120, "sentinel")
        [sentinel] = await client.broadcasts(1)
    assert refusal["type"] == "error" and refusal["ref"] == "p"
    assert f"subscribe to table:public.{root}" in refusal["error"]
    assert sentinel["channel"] == f"table:public.{root}"


@BOTH_MODES
async def test_the_partitioned_tables_policies_decide_even_for_rows_written_to_a_partition(
    server: ServerThread, db: psycopg.AsyncConnection, tree: tuple[str, str, str]
) -> None:
    # The partition itself has no row-level security: reading it directly would show every row, but
    # subscribers read the partitioned table, whose policy shows each user their own rows.
    root, low, _ = tree
    r = sql.Identifier(root)
    await db.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(r))
    await db.execute(
        sql.SQL("CREATE POLICY own ON {} FOR SELECT TO authenticated USING (owner = " + SUB + ")").format(r)
    )
    await db.execute(sql.SQL("GRANT SELECT ON {} TO authenticated").format(r))
    channel = f"table:public.{root}"
    async with (
        realtime_client(f"{server.ws_url}?token={token(ALICE)}") as alice,
        realtime_client(f"{server.ws_url}?token={token(BOB)}") as bob,
    ):
        await alice.subscribe(channel)
        await bob.subscribe(channel)
        await _insert(db, low, 1, "bob's", owner=BOB)
        await _insert(db, low, 2, "alice's", owner=ALICE)
        await _insert(db, low, 3, "bob's sentinel", owner=BOB)
        [for_alice] = await alice.broadcasts(1)
        for_bob = await bob.broadcasts(2)
    assert for_alice["payload"]["record"]["v"] == "alice's"
    assert [m["payload"]["record"]["v"] for m in for_bob] == ["bob's", "bob's sentinel"]


async def test_a_renamed_partitioned_table_reports_its_new_name_once_enabled_again(
    db: psycopg.AsyncConnection, tree: tuple[str, str, str]
) -> None:
    root, low, _ = tree
    renamed = f"{root}_renamed"
    await db.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(root), sql.Identifier(renamed))
    )
    await db.execute("SELECT enable_realtime('public', %s)", (renamed,))
    before = await (
        await db.execute(
            "SELECT oid FROM pg_trigger WHERE tgrelid = %s::regclass AND tgparentid = 0 ORDER BY oid",
            (renamed,),
        )
    ).fetchall()
    await db.execute("SELECT enable_realtime('public', %s)", (renamed,))  # nothing left to do
    after = await (
        await db.execute(
            "SELECT oid FROM pg_trigger WHERE tgrelid = %s::regclass AND tgparentid = 0 ORDER BY oid",
            (renamed,),
        )
    ).fetchall()
    async with db.transaction():
        await _insert(db, low, 7, "after the rename")
        row = await (
            await db.execute(
                "SELECT table_name FROM fluxbase_realtime.change_log WHERE txid = pg_current_xact_id()"
            )
        ).fetchone()
    assert row == (renamed,)
    assert before == after and len(before) == 2  # its row trigger and its TRUNCATE trigger, kept


@BOTH_MODES
async def test_disable_realtime_on_a_partition_names_the_table_to_disable(
    db: psycopg.AsyncConnection, tree: tuple[str, str, str]
) -> None:
    root, _, deep = tree
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        await db.execute("SELECT disable_realtime('public', %s)", (deep,))
    assert f"captured through its partitioned table public.{root}" in str(refused.value)
    assert await _statuses(db, root, deep) == [("enabled",), ("partition",)]
    await db.execute("SELECT disable_realtime('public', %s)", (root,))
    assert await _statuses(db, root, deep) == [("disabled",), ("disabled",)]


async def _statuses(db: psycopg.AsyncConnection, *tables: str) -> list[tuple[str, ...] | None]:
    status = "SELECT fluxbase_realtime.table_status('public', %s)"
    return [await (await db.execute(status, (t,))).fetchone() for t in tables]
