"""Statement-level capture (sql/capture.sql, sql/capture_triggers.sql): one log insert per statement from
its transition tables, the row trigger kept where statement triggers would miss rows, and the upgrade of
tables enabled before it (migration 0008, alembic/versions/sql/0010_statement_level_capture.sql)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from psycopg import sql

from app import migrations
from tests.support.client import realtime_client
from tests.support.databases import scratch_database
from tests.support.lease import until_writers_notify
from tests.support.server import ServerThread

CAPTURE = "'public.notify_table_change()'::regprocedure"
STATEMENT_TRIGGERS = [  # (suffix, tgtype, old table, new table), in tgtype order
    ("_insert_notify_change", 4, None, "fluxbase_new"),
    ("_delete_notify_change", 8, "fluxbase_old", None),
    ("_update_notify_change", 16, "fluxbase_old", "fluxbase_new"),
    ("_truncate_notify_change", 32, None, None),
]
ROW_TRIGGER = 1 | 4 | 8 | 16  # ROW | INSERT | DELETE | UPDATE, AFTER
TRUNCATE_TRIGGER = 32  # every kind of realtime table has one (sql/capture_triggers.sql)


def _qualified(schema: str, name: str) -> str:
    return f"{sql.Identifier(schema).as_string()}.{sql.Identifier(name).as_string()}"


async def _triggers(db: psycopg.AsyncConnection, relation: str) -> list[tuple[Any, ...]]:
    """(name, tgtype, old table, new table, oid) of the table's capture triggers, in tgtype order."""
    cursor = await db.execute(
        "SELECT tgname, tgtype, tgoldtable, tgnewtable, oid FROM pg_trigger"
        f" WHERE tgrelid = %s::regclass AND tgfoid = {CAPTURE} ORDER BY tgtype, tgname",
        (relation,),
    )
    return await cursor.fetchall()


async def _new_table(db: psycopg.AsyncConnection, columns: str, *, enable: bool = True) -> str:
    name = f"stmt_{uuid.uuid4().hex[:10]}"
    await db.execute(sql.SQL("CREATE TABLE public.{} (" + columns + ")").format(sql.Identifier(name)))
    if enable:
        await db.execute("SELECT enable_realtime('public', %s)", (name,))
    return name


async def _logged(db: psycopg.AsyncConnection, txid: int) -> list[tuple[Any, ...]]:
    """(ord, table, op, record, old_record) of one transaction's changes, in ord order."""
    cursor = await db.execute(
        "SELECT ord, table_name, op, record, old_record FROM fluxbase_realtime.change_log"
        " WHERE txid = %s::text::xid8 ORDER BY ord",
        (str(txid),),
    )
    return await cursor.fetchall()


async def _txid(db: psycopg.AsyncConnection) -> int:
    row = await (await db.execute("SELECT pg_current_xact_id()::text::bigint")).fetchone()
    assert row is not None
    return int(row[0])


async def test_multi_row_statements_log_every_row_with_dense_ords(db: psycopg.AsyncConnection) -> None:
    # Columns named like the trigger's own aliases and variables: none may shadow the whole row.
    name = await _new_table(db, "id int PRIMARY KEY, r text, n int, rec text, first_ord int, logged int")
    t = sql.Identifier(name)
    assert [tuple(r[:4]) for r in await _triggers(db, name)] == [
        (name + suffix, tgtype, old, new) for suffix, tgtype, old, new in STATEMENT_TRIGGERS
    ]
    rows = [
        {"id": i, "r": f"r{i}", "n": i * 10, "rec": None, "first_ord": -i, "logged": None} for i in (1, 2, 3)
    ]
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(
            sql.SQL(
                "INSERT INTO {} (id, r, n, first_ord) VALUES (1, 'r1', 10, -1), (2, 'r2', 20, -2),"
                " (3, 'r3', 30, -3)"
            ).format(t)
        )
        await db.execute(sql.SQL("UPDATE {} SET n = n + 1 WHERE id >= 2").format(t))
        await db.execute(sql.SQL("DELETE FROM {} WHERE id <> 2").format(t))
    updated = {2: {**rows[1], "n": 21}, 3: {**rows[2], "n": 31}}
    assert await _logged(db, txid) == [
        (0, name, "INSERT", rows[0], None),
        (1, name, "INSERT", rows[1], None),
        (2, name, "INSERT", rows[2], None),
        (3, name, "UPDATE", updated[2], rows[1]),
        (4, name, "UPDATE", updated[3], rows[2]),
        (5, name, "DELETE", None, rows[0]),
        (6, name, "DELETE", None, updated[3]),
    ]


async def test_a_multi_row_statement_reaches_subscribers_with_consecutive_ids(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        await db.execute(
            sql.SQL(
                "INSERT INTO {} (name, price) SELECT 'n' || i, i FROM generate_series(1, 500) AS i"
            ).format(t)
        )
        await db.execute(sql.SQL("UPDATE {} SET price = price * 2 WHERE price <= 250").format(t))
        messages = await client.broadcasts(750)
    ids = [m["id"] for m in messages]
    assert ids == list(range(ids[0], ids[0] + 750))
    assert [m["payload"]["record"]["price"] for m in messages[:500]] == list(range(1, 501))
    for message in messages[500:]:
        record, old = message["payload"]["record"], message["payload"]["old_record"]
        assert (record["id"], record["price"]) == (old["id"], old["price"] * 2)


async def test_statements_on_several_tables_number_one_transaction_consecutively(
    db: psycopg.AsyncConnection,
) -> None:
    first = await _new_table(db, "id int")
    second = await _new_table(db, "id int")
    f, s = sql.Identifier(first), sql.Identifier(second)
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(sql.SQL("INSERT INTO {} SELECT generate_series(1, 3)").format(f))
        await db.execute(sql.SQL("INSERT INTO {} SELECT generate_series(1, 2)").format(s))
        await db.execute(sql.SQL("UPDATE {} SET id = -id WHERE id = 2").format(f))
        await db.execute(sql.SQL("DELETE FROM {}").format(s))
    logged = await _logged(db, txid)
    assert [(o, table, op) for o, table, op, _, _ in logged] == [
        (0, first, "INSERT"), (1, first, "INSERT"), (2, first, "INSERT"),
        (3, second, "INSERT"), (4, second, "INSERT"),
        (5, first, "UPDATE"),
        (6, second, "DELETE"), (7, second, "DELETE"),
    ]  # fmt: skip


async def test_a_rolled_back_savepoint_removes_its_changes_and_its_ords_are_reused(
    db: psycopg.AsyncConnection,
) -> None:
    name = await _new_table(db, "id int, note text")
    t = sql.Identifier(name)
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'kept'), (2, 'kept')").format(t))
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with db.transaction():  # a savepoint, rolled back
                await db.execute(
                    sql.SQL("INSERT INTO {} SELECT i, 'gone' FROM generate_series(3, 5) i").format(t)
                )
                await db.execute(sql.SQL("UPDATE {} SET note = 'gone'").format(t))
                await db.execute("SELECT 1 / 0")
        async with db.transaction():  # a savepoint, released
            await db.execute(sql.SQL("UPDATE {} SET note = 'after' WHERE id = 2").format(t))
        await db.execute(sql.SQL("DELETE FROM {} WHERE id = 1").format(t))
    assert [(o, op, rec, old) for o, _, op, rec, old in await _logged(db, txid)] == [
        (0, "INSERT", {"id": 1, "note": "kept"}, None),
        (1, "INSERT", {"id": 2, "note": "kept"}, None),
        (2, "UPDATE", {"id": 2, "note": "after"}, {"id": 2, "note": "kept"}),
        (3, "DELETE", None, {"id": 1, "note": "kept"}),
    ]


async def test_a_statement_that_changes_no_row_logs_and_notifies_nothing(
    database_url: str, db: psycopg.AsyncConnection
) -> None:
    name = await _new_table(db, "id int, note text")
    t = sql.Identifier(name)
    await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'one')").format(t))
    count = sql.SQL("SELECT count(*) FROM fluxbase_realtime.change_log WHERE table_name = %s")
    before = (await (await db.execute(count, (name,))).fetchall())[0][0]
    await until_writers_notify(db)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN fluxbase_changes")
        # Each in its own transaction: any of them that notified would be one more notification.
        await db.execute(sql.SQL("UPDATE {} SET note = 'x' WHERE false").format(t))
        await db.execute(sql.SQL("DELETE FROM {} WHERE id < 0").format(t))
        await db.execute(sql.SQL("INSERT INTO {} SELECT 2, 'none' WHERE false").format(t))
        # The sentinel: one row, which must be the only change and the only notification.
        await db.execute(sql.SQL("INSERT INTO {} VALUES (3, 'sentinel')").format(t))
        await db.execute("NOTIFY fluxbase_changes, 'end'")
        payloads = []
        async for notify in listener.notifies(timeout=15):
            payloads.append(notify.payload)
            if notify.payload == "end":
                break
    assert payloads == ["", "end"]
    rows = await (
        await db.execute(
            "SELECT op, record FROM fluxbase_realtime.change_log WHERE table_name = %s ORDER BY seq", (name,)
        )
    ).fetchall()
    assert len(rows) == before + 1
    assert rows[-1] == ("INSERT", {"id": 3, "note": "sentinel"})
    # Inside a transaction, a statement that changes nothing takes no ord.
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(sql.SQL("INSERT INTO {} VALUES (4, 'a')").format(t))
        await db.execute(sql.SQL("UPDATE {} SET note = 'x' WHERE false").format(t))
        await db.execute(sql.SQL("INSERT INTO {} VALUES (5, 'b')").format(t))
    assert [(o, rec["id"]) for o, _, _, rec, _ in await _logged(db, txid)] == [(0, 4), (1, 5)]


async def test_an_update_of_primary_keys_pairs_old_and_new(db: psycopg.AsyncConnection) -> None:
    """Pairing is by position in the transition tables, not by key: swap every pair of neighbouring keys
    (1<->2, 3<->4, ...) and visit the rows in random order, then check each change's old and new row."""
    rows = 2000
    name = await _new_table(
        db, "id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, payload text NOT NULL", enable=False
    )
    t = sql.Identifier(name)
    await db.execute(
        sql.SQL("INSERT INTO {} SELECT i, md5(i::text) FROM generate_series(1, %s) AS i").format(t), (rows,)
    )
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(
            sql.SQL(
                "UPDATE {0} SET id = CASE WHEN {0}.id % 2 = 0 THEN {0}.id - 1 ELSE {0}.id + 1 END"
                " FROM (SELECT id FROM {0} ORDER BY random()) AS visit WHERE visit.id = {0}.id"
            ).format(t)
        )
    logged = await _logged(db, txid)
    assert [o for o, *_ in logged] == list(range(rows))
    for _, _, op, record, old in logged:
        assert op == "UPDATE"
        assert record["payload"] == old["payload"] == _md5(old["id"])
        assert record["id"] == (old["id"] - 1 if old["id"] % 2 == 0 else old["id"] + 1)
    assert sorted(old["id"] for *_, old in logged) == list(range(1, rows + 1))


def _md5(value: int) -> str:
    return hashlib.md5(str(value).encode()).hexdigest()  # noqa: S324 - matches PostgreSQL's md5()


async def test_upserts_and_writable_ctes_log_every_row_once(db: psycopg.AsyncConnection) -> None:
    name = await _new_table(db, "id int PRIMARY KEY, v text")
    t = sql.Identifier(name)
    await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'a')").format(t))
    async with db.transaction():
        txid = await _txid(db)
        # Both inserts of one query land in one transition table: one trigger call, both rows.
        await db.execute(
            sql.SQL(
                "WITH first AS (INSERT INTO {0} VALUES (2, 'b') RETURNING 1) INSERT INTO {0} VALUES (3, 'c')"
            ).format(t)
        )
        # ON CONFLICT DO UPDATE fires the UPDATE and the INSERT statement triggers.
        await db.execute(
            sql.SQL(
                "INSERT INTO {} VALUES (1, 'a2'), (4, 'd') ON CONFLICT (id) DO UPDATE SET v = excluded.v"
            ).format(t)
        )
    logged = await _logged(db, txid)
    assert [o for o, *_ in logged] == [0, 1, 2, 3]
    assert sorted((op, (rec or {}).get("id"), (old or {}).get("v")) for _, _, op, rec, old in logged) == [
        ("INSERT", 2, None), ("INSERT", 3, None), ("INSERT", 4, None), ("UPDATE", 1, "a"),
    ]  # fmt: skip


async def test_a_partitioned_table_keeps_the_row_trigger(db: psycopg.AsyncConnection) -> None:
    root = f"parted_{uuid.uuid4().hex[:8]}"
    low, high = f"{root}_low", f"{root}_high"
    r = sql.Identifier(root)
    await db.execute(sql.SQL("CREATE TABLE public.{} (id int, v text) PARTITION BY RANGE (id)").format(r))
    await db.execute(
        sql.SQL("CREATE TABLE public.{} PARTITION OF {} FOR VALUES FROM (0) TO (100)").format(
            sql.Identifier(low), r
        )
    )
    for _ in range(2):
        await db.execute("SELECT enable_realtime('public', %s)", (root,))
    # Attached after enabling: the clone reaches it too.
    await db.execute(
        sql.SQL("CREATE TABLE public.{} PARTITION OF {} FOR VALUES FROM (100) TO (200)").format(
            sql.Identifier(high), r
        )
    )
    assert [tuple(x[:4]) for x in await _triggers(db, root)] == [
        (f"{root}_notify_change", ROW_TRIGGER, None, None),
        (f"{root}_truncate_notify_change", TRUNCATE_TRIGGER, None, None),
    ]
    # enable_realtime on a partition captured through its root adds nothing.
    await db.execute("SELECT enable_realtime('public', %s)", (low,))
    assert [tuple(x[:2]) for x in await _triggers(db, low)] == [(f"{root}_notify_change", ROW_TRIGGER)]
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'via root'), (150, 'via root')").format(r))
        # A statement on a partition directly: a statement trigger on the root would not see it.
        await db.execute(sql.SQL("INSERT INTO {} VALUES (2, 'direct')").format(sql.Identifier(low)))
        await db.execute(sql.SQL("UPDATE {} SET v = 'updated' WHERE id = 2").format(sql.Identifier(low)))
    # Rows are reported under the partitioned table's name, whichever partition holds them.
    assert [(o, table, op, (rec or {}).get("v")) for o, table, op, rec, _ in await _logged(db, txid)] == [
        (0, root, "INSERT", "via root"),
        (1, root, "INSERT", "via root"),
        (2, root, "INSERT", "direct"),
        (3, root, "UPDATE", "updated"),
    ]


async def test_a_partition_enabled_on_its_own_sees_rows_routed_through_its_root(
    db: psycopg.AsyncConnection,
) -> None:
    root = f"root_{uuid.uuid4().hex[:10]}"
    part = f"{root}_1"
    r, p = sql.Identifier(root), sql.Identifier(part)
    await db.execute(sql.SQL("CREATE TABLE public.{} (id int, v text) PARTITION BY LIST (id)").format(r))
    await db.execute(sql.SQL("CREATE TABLE public.{} PARTITION OF public.{} FOR VALUES IN (1)").format(p, r))
    await db.execute("SELECT enable_realtime('public', %s)", (part,))  # not the root
    assert [tuple(x[:2]) for x in await _triggers(db, part)] == [
        (f"{part}_notify_change", ROW_TRIGGER),
        (f"{part}_truncate_notify_change", TRUNCATE_TRIGGER),
    ]
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(sql.SQL("INSERT INTO public.{} VALUES (1, 'via root')").format(r))
        await db.execute(sql.SQL("UPDATE public.{} SET v = 'updated via root'").format(r))
    assert [(o, table, op, rec["v"]) for o, table, op, rec, _ in await _logged(db, txid)] == [
        (0, part, "INSERT", "via root"),
        (1, part, "UPDATE", "updated via root"),
    ]


async def test_an_enabled_table_attached_to_a_realtime_root_is_logged_once_after_enabling_again(
    db: psycopg.AsyncConnection,
) -> None:
    root = f"root_{uuid.uuid4().hex[:10]}"
    await db.execute(
        sql.SQL("CREATE TABLE public.{} (id int, v text) PARTITION BY LIST (id)").format(sql.Identifier(root))
    )
    await db.execute("SELECT enable_realtime('public', %s)", (root,))
    part = await _new_table(db, "id int, v text")  # statement triggers of its own
    await db.execute(
        sql.SQL("ALTER TABLE public.{} ATTACH PARTITION public.{} FOR VALUES IN (1)").format(
            sql.Identifier(root), sql.Identifier(part)
        )
    )
    # Now it has its own four triggers and the clone of the root's row trigger: rows would be logged twice.
    assert len(await _triggers(db, part)) == 5
    await db.execute("SELECT enable_realtime('public', %s)", (part,))
    assert [tuple(x[:2]) for x in await _triggers(db, part)] == [(f"{root}_notify_change", ROW_TRIGGER)]
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(sql.SQL("INSERT INTO public.{} VALUES (1, 'direct')").format(sql.Identifier(part)))
        await db.execute(sql.SQL("INSERT INTO public.{} VALUES (1, 'via root')").format(sql.Identifier(root)))
    assert [(o, table, rec["v"]) for o, table, _, rec, _ in await _logged(db, txid)] == [
        (0, root, "direct"),
        (1, root, "via root"),
    ]


async def test_inheritance_trees_keep_row_triggers_and_each_row_its_own_table(
    db: psycopg.AsyncConnection,
) -> None:
    parent = await _new_table(db, "id int, v text", enable=False)
    child = f"{parent}_child"
    await db.execute(
        sql.SQL("CREATE TABLE public.{} (extra text) INHERITS (public.{})").format(
            sql.Identifier(child), sql.Identifier(parent)
        )
    )
    for name in (parent, child):
        await db.execute("SELECT enable_realtime('public', %s)", (name,))
        assert [tuple(x[:2]) for x in await _triggers(db, name)] == [
            (f"{name}_notify_change", ROW_TRIGGER),
            (f"{name}_truncate_notify_change", TRUNCATE_TRIGGER),
        ]
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'c', 'x')").format(sql.Identifier(child)))
        await db.execute(sql.SQL("INSERT INTO {} VALUES (2, 'p')").format(sql.Identifier(parent)))
        # Names the parent, changes a child row: logged under the child, with all of its columns.
        await db.execute(sql.SQL("UPDATE {} SET v = v || '!'").format(sql.Identifier(parent)))
    # The parent's rows come first in the scan, then the child's.
    assert [(o, table, op, rec) for o, table, op, rec, _ in await _logged(db, txid)] == [
        (0, child, "INSERT", {"id": 1, "v": "c", "extra": "x"}),
        (1, parent, "INSERT", {"id": 2, "v": "p"}),
        (2, parent, "UPDATE", {"id": 2, "v": "p!"}),
        (3, child, "UPDATE", {"id": 1, "v": "c!", "extra": "x"}),
    ]


async def test_enable_realtime_replaces_a_row_trigger_and_is_idempotent(db: psycopg.AsyncConnection) -> None:
    name = await _new_table(db, "id int", enable=False)
    t = sql.Identifier(name)
    # The trigger enable_realtime created before statement-level capture.
    await db.execute(
        sql.SQL(
            "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON public.{} FOR EACH ROW"
            " EXECUTE FUNCTION public.notify_table_change()"
        ).format(sql.Identifier(f"{name}_notify_change"), t)
    )
    status = await (
        await db.execute("SELECT fluxbase_realtime.table_status('public', %s)", (name,))
    ).fetchone()
    assert status == ("enabled",)
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    first = await _triggers(db, name)
    assert [tuple(x[:4]) for x in first] == [
        (name + s, tgtype, o, n) for s, tgtype, o, n in STATEMENT_TRIGGERS
    ]
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    assert await _triggers(db, name) == first  # the same triggers (same oids): nothing was recreated
    status = await (
        await db.execute("SELECT fluxbase_realtime.table_status('public', %s)", (name,))
    ).fetchone()
    assert status == ("enabled",)
    await db.execute("SELECT disable_realtime('public', %s)", (name,))
    assert await _triggers(db, name) == []
    status = await (
        await db.execute("SELECT fluxbase_realtime.table_status('public', %s)", (name,))
    ).fetchone()
    assert status == ("disabled",)


@pytest.mark.parametrize(
    "name",
    [
        "t" * 63,  # the longest name PostgreSQL allows
        "é" * 31 + "x",  # 63 bytes of UTF-8: the name must be cut between characters
        "n" * 41 + "é",  # the cut falls in the middle of the last character
    ],
    ids=["ascii", "two-byte", "split-character"],
)
async def test_a_63_byte_table_name_gets_distinct_names_ending_in_notify_change(
    db: psycopg.AsyncConnection, name: str
) -> None:
    schema = f"long_{uuid.uuid4().hex[:8]}"
    await db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    qualified = _qualified(schema, name)
    await db.execute(f"CREATE TABLE {qualified} (id int)")
    for _ in range(2):
        await db.execute("SELECT enable_realtime(%s, %s)", (schema, name))
    triggers = await _triggers(db, qualified)
    names = [x[0] for x in triggers]
    assert [x[1] for x in triggers] == [4, 8, 16, 32]
    assert len(set(names)) == 4
    for trigger_name, (suffix, *_) in zip(names, STATEMENT_TRIGGERS, strict=True):
        assert trigger_name.endswith(suffix)
        assert len(trigger_name.encode()) <= 63
        assert name.startswith(trigger_name.removesuffix(suffix))
    listed = await (
        await db.execute(
            "SELECT DISTINCT trigger_name FROM information_schema.triggers"
            " WHERE trigger_schema = %s AND trigger_name LIKE '%%\\_notify\\_change'",
            (schema,),
        )
    ).fetchall()
    # One row per INSERT, UPDATE and DELETE trigger: information_schema has no TRUNCATE triggers.
    assert sorted(r[0] for r in listed) == sorted(names[:3])
    async with db.transaction():
        txid = await _txid(db)
        await db.execute(f"INSERT INTO {qualified} VALUES (1), (2)")
        await db.execute(f"DELETE FROM {qualified}")
    assert [(o, table, op) for o, table, op, _, _ in await _logged(db, txid)] == [
        (0, name, "INSERT"), (1, name, "INSERT"), (2, name, "DELETE"), (3, name, "DELETE"),
    ]  # fmt: skip
    await db.execute("SELECT disable_realtime(%s, %s)", (schema, name))
    assert await _triggers(db, qualified) == []
    # A partitioned table of such a name: its row and truncate triggers end in _notify_change too.
    await db.execute(f"DROP TABLE {qualified}")
    await db.execute(f"CREATE TABLE {qualified} (id int) PARTITION BY LIST (id)")
    await db.execute("SELECT enable_realtime(%s, %s)", (schema, name))
    triggers = await _triggers(db, qualified)
    assert [x[1] for x in triggers] == [ROW_TRIGGER, TRUNCATE_TRIGGER]
    for trigger_name, *_ in triggers:
        assert trigger_name.endswith("_notify_change") and len(trigger_name.encode()) <= 63


@pytest.fixture
def database_at_0007(server_url: str) -> Iterator[str]:
    """A fresh database migrated only up to revision 0007 (row-level capture), dropped at the end."""
    with scratch_database(server_url) as url:
        command.upgrade(migrations.alembic_config(url), "0007")
        yield url


def test_tables_enabled_before_the_upgrade_move_to_statement_triggers(database_at_0007: str) -> None:
    with psycopg.connect(database_at_0007, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.plain (id int PRIMARY KEY, v text)")
        conn.execute('CREATE TABLE public."Odd ""name""" (id int)')
        conn.execute("CREATE TABLE public.parted (id int) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (0) TO (10)")
        conn.execute("CREATE TABLE public.untouched (id int)")
        for name in ("plain", 'Odd "name"', "parted"):
            conn.execute("SELECT enable_realtime('public', %s)", (name,))
        conn.execute("INSERT INTO public.plain VALUES (1, 'before')")
        before = conn.execute(
            "SELECT tgrelid::regclass::text, tgname, tgtype FROM pg_trigger"
            f" WHERE tgfoid = {CAPTURE} ORDER BY 1"
        ).fetchall()
        assert before == [
            ('"Odd ""name"""', 'Odd "name"_notify_change', ROW_TRIGGER),
            ("parted", "parted_notify_change", ROW_TRIGGER),
            ("parted_1", "parted_notify_change", ROW_TRIGGER),
            ("plain", "plain_notify_change", ROW_TRIGGER),
        ]

    migrations.upgrade(database_at_0007)

    with psycopg.connect(database_at_0007, autocommit=True) as conn:
        after = conn.execute(
            "SELECT tgrelid::regclass::text, tgname, tgtype, tgoldtable, tgnewtable FROM pg_trigger"
            f" WHERE tgfoid = {CAPTURE} ORDER BY 1, 3"
        ).fetchall()
        statement_triggers = [
            (relation, f"{name}{suffix}", tgtype, old, new)
            for relation, name in (('"Odd ""name"""', 'Odd "name"'), ("plain", "plain"))
            for suffix, tgtype, old, new in STATEMENT_TRIGGERS
        ]
        assert after == [
            *statement_triggers[:4],
            ("parted", "parted_notify_change", ROW_TRIGGER, None, None),
            ("parted", "parted_truncate_notify_change", TRUNCATE_TRIGGER, None, None),
            ("parted_1", "parted_notify_change", ROW_TRIGGER, None, None),
            *statement_triggers[4:],
        ]
        with conn.transaction():
            txid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
            conn.execute("INSERT INTO public.plain VALUES (2, 'after'), (3, 'after')")
            conn.execute("UPDATE public.plain SET id = id + 10 WHERE id >= 2")
            conn.execute("INSERT INTO public.parted VALUES (5)")
            conn.execute('INSERT INTO public."Odd ""name""" VALUES (7)')
        assert txid is not None
        logged = conn.execute(
            "SELECT ord, table_name, op, record, old_record FROM fluxbase_realtime.change_log"
            " WHERE txid = %s::xid8 ORDER BY ord",
            (txid[0],),
        ).fetchall()
        assert logged == [
            (0, "plain", "INSERT", {"id": 2, "v": "after"}, None),
            (1, "plain", "INSERT", {"id": 3, "v": "after"}, None),
            (2, "plain", "UPDATE", {"id": 12, "v": "after"}, {"id": 2, "v": "after"}),
            (3, "plain", "UPDATE", {"id": 13, "v": "after"}, {"id": 3, "v": "after"}),
            (4, "parted", "INSERT", {"id": 5}, None),  # under its own name since 0013
            (5, 'Odd "name"', "INSERT", {"id": 7}, None),
        ]
        # The change logged by the row trigger before the upgrade is still there, and the channel the
        # trigger notifies is the one configured before.
        assert conn.execute(
            "SELECT count(*) FROM fluxbase_realtime.change_log WHERE record->>'v' = 'before'"
        ).fetchone() == (1,)
        assert conn.execute(
            "SELECT prosrc LIKE '%pg_notify(''fluxbase_changes''%' FROM pg_proc"
            " WHERE oid = 'public.notify_table_change()'::regprocedure"
        ).fetchone() == (True,)
        assert conn.execute("SELECT fluxbase_realtime.table_status('public', 'plain')").fetchone() == (
            "enabled",
        )
