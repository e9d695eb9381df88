"""Logical mode only: what the WAL brings that triggers do not (TOAST, tables without a key, the slot)."""

from __future__ import annotations

import uuid

import orjson
import psycopg
import pytest
from psycopg import sql

from tests.support.client import realtime_client
from tests.support.modes import slot_for
from tests.support.server import ServerThread

pytestmark = pytest.mark.parametrize("capture_mode", ["logical"], indirect=True)


async def _new_table(db: psycopg.AsyncConnection, columns: str) -> str:
    name = f"logical_{uuid.uuid4().hex[:10]}"
    await db.execute(sql.SQL("CREATE TABLE public.{} ({})").format(sql.Identifier(name), sql.SQL(columns)))
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    return name


async def test_writers_touch_no_realtime_table(db: psycopg.AsyncConnection, table: str) -> None:
    triggers = await (
        await db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass", (table,))
    ).fetchone()
    assert triggers == (0,)
    assert await (
        await db.execute("SELECT * FROM realtime_tables() WHERE table_name = %s", (table,))
    ).fetchall() == [("public", table, "logical")]
    assert await (
        await db.execute("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", (table,))
    ).fetchone() == ("f",)


async def test_insert_update_delete_arrive_with_old_records(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        await db.execute(
            sql.SQL("""INSERT INTO {} (name, price, data) VALUES ('a', 9.99, '{{"k": [1]}}')""").format(t)
        )
        await db.execute(sql.SQL("UPDATE {} SET name = 'b'").format(t))
        await db.execute(sql.SQL("DELETE FROM {}").format(t))
        inserted, updated, deleted = await client.broadcasts(3)
    row = {"id": 1, "name": "a", "price": 9.99, "data": {"k": [1]}}
    assert inserted["payload"]["record"] == row
    assert updated["payload"]["record"] == {**row, "name": "b"} and updated["payload"]["old_record"] == row
    assert deleted["payload"]["old_record"] == {**row, "name": "b"} and "record" not in deleted["payload"]
    assert [updated["id"], deleted["id"]] == [inserted["id"] + 1, inserted["id"] + 2]


async def test_unchanged_toasted_values_are_filled_from_the_old_row(
    server: ServerThread, db: psycopg.AsyncConnection
) -> None:
    table = await _new_table(db, "id int PRIMARY KEY, n int, big text")
    t = sql.Identifier(table)
    # Random hex does not compress: 200 kB is stored out of line, and an UPDATE not touching it leaves it
    # out of the new row in the WAL.
    big = (
        await (
            await db.execute("SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 6250)")
        ).fetchone()
    )[0]  # type: ignore[index]
    async with realtime_client(server.ws_url, max_size=None) as client:
        await client.subscribe(f"table:public.{table}")
        await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 0, %s)").format(t), (big,))
        await db.execute(sql.SQL("UPDATE {} SET n = 1").format(t))
        _, updated = await client.broadcasts(2)
    assert updated["payload"]["record"] == {"id": 1, "n": 1, "big": big}
    assert updated["payload"]["old_record"] == {"id": 1, "n": 0, "big": big}


async def test_a_table_without_a_primary_key(server: ServerThread, db: psycopg.AsyncConnection) -> None:
    table = await _new_table(db, "a int, b text")
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'x'), (1, 'x')").format(t))
        # Two identical rows: UPDATE and DELETE work (REPLICA IDENTITY FULL), each row one change.
        await db.execute(sql.SQL("UPDATE {} SET b = 'y'").format(t))
        await db.execute(sql.SQL("DELETE FROM {}").format(t))
        messages = await client.broadcasts(6)
    assert [m["payload"]["type"] for m in messages] == ["INSERT"] * 2 + ["UPDATE"] * 2 + ["DELETE"] * 2
    assert messages[3]["payload"]["old_record"] == {"a": 1, "b": "x"}
    assert messages[5]["payload"]["old_record"] == {"a": 1, "b": "y"}


async def test_stats_report_the_slot(server: ServerThread, database_url: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=server.http_url) as http:
        stats = (await http.get("/api/realtime/stats")).json()
    assert stats["capture"] == "logical" and stats["slot_status"] in ("reserved", "extended")
    assert isinstance(stats["slot_lag_bytes"], int) and stats["consumer"] is True
    assert slot_for(database_url).startswith("slot_")


async def test_a_forged_partition_truncate_message_is_not_logged(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    """Any session may write a logical decoding message with the trigger's prefix: the consumer logs one
    only for a realtime partitioned table, and skips one it cannot read."""
    plain = await _new_table(db, "id int")
    await db.execute("SELECT disable_realtime('public', %s)", (plain,))
    prefix = "fluxbase_realtime.partition_truncate"
    forged = '{"root": ["public", "%s"], "partition": {"schema": "public", "table": "x"}, "ancestors": []}'
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        async with db.transaction():
            await db.execute("SELECT pg_logical_emit_message(true, %s, %s)", (prefix, forged % plain))
            await db.execute("SELECT pg_logical_emit_message(true, %s, 'not json')", (prefix,))
            await db.execute(
                sql.SQL("INSERT INTO {} (name) VALUES ('sentinel')").format(sql.Identifier(table))
            )
        (sentinel,) = await client.broadcasts(1)
    assert sentinel["payload"]["record"]["name"] == "sentinel"
    assert await (
        await db.execute("SELECT count(*) FROM fluxbase_realtime.change_log WHERE table_name = %s", (plain,))
    ).fetchone() == (0,)


async def test_the_batch_writer_logs_rows_that_no_longer_fit_their_table_as_text(
    db: psycopg.AsyncConnection, table: str
) -> None:
    """As when a column's type changed under the stream: that table's rows go in as the literal's text
    (with a WARNING) rather than stopping capture; another table's rows in the same batch are cast."""
    other = await _new_table(db, "id int, n int")
    batch = orjson.dumps(
        [
            ["public", table, [[0, "INSERT", '("not a number",,,)', None]]],
            ["public", other, [[1, "UPDATE", '("1","2")', '("1","1")'], [2, "DELETE", None, '("1","2")']]],
        ]
    ).decode()
    async with db.transaction(force_rollback=True):
        await db.execute("SELECT fluxbase_realtime.log_decoded_batch(%s::jsonb, '0/0', 0, true)", (batch,))
        logged = await (
            await db.execute(
                "SELECT ord, table_name, op, record, old_record FROM fluxbase_realtime.change_log"
                " WHERE txid = pg_current_xact_id() ORDER BY ord"
            )
        ).fetchall()
    assert logged == [
        (0, table, "INSERT", '("not a number",,,)', None),
        (1, other, "UPDATE", {"id": 1, "n": 2}, {"id": 1, "n": 1}),
        (2, other, "DELETE", None, {"id": 1, "n": 2}),
    ]
