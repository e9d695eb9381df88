"""The database side: enable/disable, quoting, record encoding, large rows, NOTIFY, commit order."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import psycopg
import pytest
from psycopg import sql

from tests.conftest import make_settings
from tests.support.client import realtime_client
from tests.support.lease import until_writers_notify
from tests.support.modes import BOTH_MODES
from tests.support.server import ServerThread

REALTIME_TABLES = """
    SELECT trigger_schema, event_object_table AS table_name, trigger_name
    FROM information_schema.triggers WHERE trigger_name LIKE '%_notify_change'
"""


async def _realtime_tables(db: psycopg.AsyncConnection) -> set[tuple[str, str, str]]:
    rows = await (await db.execute(REALTIME_TABLES)).fetchall()
    return {(r[0], r[1], r[2]) for r in rows}


async def test_enable_and_disable_are_idempotent_and_quote_names(db: psycopg.AsyncConnection) -> None:
    schema, name = f"Odd Schema {uuid.uuid4().hex[:6]}", 'Mixed "Case" Table'
    await db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    await db.execute(
        sql.SQL("CREATE TABLE {}.{} (id int)").format(sql.Identifier(schema), sql.Identifier(name))
    )
    for _ in range(2):
        await db.execute("SELECT enable_realtime(%s, %s)", (schema, name))
    assert {
        (schema, name, f"{name}_{event}_notify_change") for event in ("insert", "update", "delete")
    } <= await _realtime_tables(db)
    triggers = await (
        await db.execute(
            "SELECT tgname, tgtype, tgoldtable, tgnewtable FROM pg_trigger"
            " WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY tgtype",
            (sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name)).as_string(db),),
        )
    ).fetchall()
    # Four statement-level triggers (no ROW bit 1), AFTER (no BEFORE bit 2), one event each: INSERT (4),
    # DELETE (8), UPDATE (16), each with the transition tables its event has, and TRUNCATE (32).
    assert triggers == [
        (f"{name}_insert_notify_change", 4, None, "fluxbase_new"),
        (f"{name}_delete_notify_change", 8, "fluxbase_old", None),
        (f"{name}_update_notify_change", 16, "fluxbase_old", "fluxbase_new"),
        (f"{name}_truncate_notify_change", 32, None, None),
    ]
    for _ in range(2):
        await db.execute("SELECT disable_realtime(%s, %s)", (schema, name))
    assert all(t[1] != name for t in await _realtime_tables(db))


@pytest.mark.parametrize("function", ["enable_realtime", "disable_realtime"])
async def test_missing_table_is_a_clear_error(db: psycopg.AsyncConnection, function: str) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable, match=r'table public\."NoSuchTable" does not exist'):
        await db.execute(sql.SQL("SELECT {}('public', 'NoSuchTable')").format(sql.Identifier(function)))


async def test_names_are_exact_not_case_folded(db: psycopg.AsyncConnection) -> None:
    await db.execute("CREATE TABLE IF NOT EXISTS public.lowercase_only (id int)")
    with pytest.raises(psycopg.errors.UndefinedTable):
        await db.execute("SELECT enable_realtime('public', 'LOWERCASE_ONLY')")


async def test_each_transaction_notifies_once_on_the_configured_channel(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    await until_writers_notify(db)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute("LISTEN fluxbase_changes")
        async with db.transaction():
            for n in range(3):
                await db.execute(
                    sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table)), (n,)
                )
        await db.execute("NOTIFY fluxbase_changes, 'sentinel'")
        payloads = []
        async for notify in listener.notifies(timeout=15):
            payloads.append(notify.payload)
            if notify.payload == "sentinel":
                break
    assert payloads == ["", "sentinel"]


@BOTH_MODES
async def test_record_types_are_encoded_as_json(server: ServerThread, db: psycopg.AsyncConnection) -> None:
    name = f"types_{uuid.uuid4().hex[:8]}"
    await db.execute(
        sql.SQL(
            "CREATE TABLE public.{} (id bigint, n numeric, f double precision, ok boolean, missing text,"
            " at timestamptz, day date, doc jsonb, tags text[], matrix int[], bytes bytea)"
        ).format(sql.Identifier(name))
    )
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{name}")
        await db.execute(
            sql.SQL(
                "INSERT INTO {} VALUES (9007199254740993, 12.50, 0.25, true, NULL, %s, '2026-11-26',"
                " %s::jsonb, %s, %s, %s)"
            ).format(sql.Identifier(name)),
            (
                dt.datetime(2026, 11, 26, 12, 30, 15, 123456, tzinfo=dt.UTC),
                '{"a": {"b": [1, null, "x"]}, "c": 1.5}',
                ["x", "y z"],
                [[1, 2], [3, 4]],
                b"\x00\xff",
            ),
        )
        [change] = await client.broadcasts(1)
    record = change["payload"]["record"]
    assert record["id"] == 9007199254740993
    assert record["n"] == 12.5
    assert record["f"] == 0.25
    assert record["ok"] is True
    assert "missing" in record and record["missing"] is None
    assert dt.datetime.fromisoformat(record["at"]) == dt.datetime(
        2026, 11, 26, 12, 30, 15, 123456, tzinfo=dt.UTC
    )
    assert record["day"] == "2026-11-26"
    assert record["doc"] == {"a": {"b": [1, None, "x"]}, "c": 1.5}
    assert record["tags"] == ["x", "y z"]
    assert record["matrix"] == [[1, 2], [3, 4]]
    assert record["bytes"] == "\\x00ff"


@BOTH_MODES
async def test_a_1mb_row_and_wide_values_commit_and_arrive_whole(
    server: ServerThread, db: psycopg.AsyncConnection
) -> None:
    name = f"wide_{uuid.uuid4().hex[:8]}"
    await db.execute(
        sql.SQL("CREATE TABLE public.{} (id int, body text, doc jsonb, blob bytea, nums int[])").format(
            sql.Identifier(name)
        )
    )
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    body = uuid.uuid4().hex * 32768  # 1 MiB of text, far past NOTIFY's 8000-byte payload limit
    doc = {f"k{i}": "v" * 100 for i in range(2000)}
    async with realtime_client(server.ws_url, max_size=None) as client:
        await client.subscribe(f"table:public.{name}")
        await db.execute(
            sql.SQL("INSERT INTO {} VALUES (1, %s, %s, decode(repeat('ab', 100000), 'hex'), %s)").format(
                sql.Identifier(name)
            ),
            (body, psycopg.types.json.Jsonb(doc), list(range(50000))),
        )
        await db.execute(sql.SQL("UPDATE {} SET id = 2").format(sql.Identifier(name)))
        inserted, updated = await client.broadcasts(2)
    assert inserted["payload"]["record"]["body"] == body
    assert inserted["payload"]["record"]["doc"] == doc
    assert inserted["payload"]["record"]["blob"] == "\\x" + "ab" * 100000
    assert inserted["payload"]["record"]["nums"] == list(range(50000))
    assert updated["payload"]["old_record"]["body"] == body
    assert updated["payload"]["record"]["id"] == 2


@BOTH_MODES
async def test_mixed_case_and_non_public_schema_channels(
    server: ServerThread, db: psycopg.AsyncConnection
) -> None:
    schema, name = f"Inventory {uuid.uuid4().hex[:6]}", "Stock Items.v2"
    await db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    await db.execute(
        sql.SQL("CREATE TABLE {}.{} (sku text)").format(sql.Identifier(schema), sql.Identifier(name))
    )
    await db.execute("SELECT enable_realtime(%s, %s)", (schema, name))
    channel = f"table:{schema}.{name}"
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel)
        await db.execute(
            sql.SQL("INSERT INTO {}.{} VALUES ('A-1')").format(sql.Identifier(schema), sql.Identifier(name))
        )
        [change] = await client.broadcasts(1)
    assert change["channel"] == channel
    assert change["payload"] | {"record": None} == {
        "type": "INSERT",
        "table": name,
        "schema": schema,
        "record": None,
    }
    assert change["payload"]["record"] == {"sku": "A-1"}


@BOTH_MODES
async def test_rolled_back_changes_are_never_delivered(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        async with db.transaction():
            await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('kept 1')").format(t))
            with pytest.raises(psycopg.errors.DivisionByZero):
                async with db.transaction():  # a savepoint, rolled back
                    await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('rolled back')").format(t))
                    await db.execute("SELECT 1 / 0")
            await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('kept 2')").format(t))
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with db.transaction():
                await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('aborted')").format(t))
                await db.execute("SELECT 1 / 0")
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(t))
        messages = await client.broadcasts(3)
    assert [m["payload"]["record"]["name"] for m in messages] == ["kept 1", "kept 2", "sentinel"]
    assert messages[1]["id"] == messages[0]["id"] + 1


@BOTH_MODES
async def test_ids_follow_commit_order_not_write_order(
    server: ServerThread, database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    t = sql.Identifier(table)
    async with (
        await psycopg.AsyncConnection.connect(database_url) as first,
        await psycopg.AsyncConnection.connect(database_url) as second,
        realtime_client(server.ws_url) as client,
    ):
        await client.subscribe(f"table:public.{table}")
        # `first` writes first (it takes the lower sequence numbers) but commits last.
        await first.execute(sql.SQL("INSERT INTO {} (name) VALUES ('written first')").format(t))
        await second.execute(sql.SQL("INSERT INTO {} (name) VALUES ('written second')").format(t))
        await second.commit()
        [early] = await client.broadcasts(1)
        await first.commit()
        [late] = await client.broadcasts(1)
    assert early["payload"]["record"]["name"] == "written second"
    assert late["payload"]["record"]["name"] == "written first"
    assert late["id"] > early["id"]


async def test_a_transaction_that_waited_on_another_is_numbered_after_it(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    """Both commit before any sequencer pass sees them: order must still follow the row's history."""
    t = sql.Identifier(table)
    await db.execute(sql.SQL("INSERT INTO {} (id, name) VALUES (1, 'v0')").format(t))
    await db.execute("SELECT fluxbase_realtime.sequence_commits()")
    async with (
        await psycopg.AsyncConnection.connect(database_url) as older,
        await psycopg.AsyncConnection.connect(database_url) as younger,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as sequencer,
    ):
        # Hold off every sequencer pass so that both commits are first seen by the same pass.
        await sequencer.execute("BEGIN")
        await sequencer.execute("SELECT pg_advisory_xact_lock(hashtext('fluxbase_realtime.sequencer'))")
        await older.execute("SELECT pg_current_xact_id()")  # `older` has the lower transaction id
        await younger.execute(sql.SQL("UPDATE {} SET name = 'v1' WHERE id = 1").format(t))
        blocked = asyncio.create_task(
            older.execute(sql.SQL("UPDATE {} SET name = 'v2' WHERE id = 1").format(t))
        )
        await younger.commit()
        await blocked
        await older.commit()
        await sequencer.execute("COMMIT")
    await db.execute("SELECT fluxbase_realtime.sequence_commits()")
    rows = await (
        await db.execute(
            "SELECT c.first_id + l.ord, l.record->>'name' FROM fluxbase_realtime.commits c"
            " JOIN fluxbase_realtime.change_log l USING (txid)"
            " WHERE l.table_name = %s AND l.op = 'UPDATE' ORDER BY 1",
            (table,),
        )
    ).fetchall()
    assert [name for _, name in rows] == ["v1", "v2"]


async def test_a_configured_notify_channel_is_used_by_trigger_and_listener(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    t = sql.Identifier(table)
    try:
        with ServerThread(make_settings(database_url, realtime_notify_channel="custom_changes")) as server:
            async with (
                await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener,
                realtime_client(server.ws_url) as client,
            ):
                await listener.execute("LISTEN custom_changes")
                await client.subscribe(f"table:public.{table}")
                await until_writers_notify(db)
                await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('via custom channel')").format(t))
                [change] = await client.broadcasts(1)
                notify = await anext(listener.notifies(timeout=15))
        assert change["payload"]["record"]["name"] == "via custom channel"
        assert notify.channel == "custom_changes"
    finally:
        # The channel is database-wide: give the shared test server its channel back.
        await db.execute("SELECT fluxbase_realtime.configure_notify_channel('fluxbase_changes')")
