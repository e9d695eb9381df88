"""The feed's log read stays an index lookup per transaction however large the log is
(sql/sequencer.sql, sql/replay_and_retention.sql)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from app import migrations
from app.services.changes import FEED_SESSION_OPTIONS, READ
from tests.support.databases import scratch_database

TRANSACTIONS = 5000


async def test_reading_a_few_new_changes_does_not_scan_the_whole_log(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    # Statistics taken after bulk loads (many changes per transaction), then a busy single-row writer: the
    # planner expects thousands of log rows per transaction, the shape that made it scan the whole log.
    await db.execute("SET synchronous_commit = off")  # only this test's own writes: they need no flush
    for _ in range(4):
        bulk = "INSERT INTO public.{} (name, price) SELECT 'bulk', i FROM generate_series(1, 5000) i"
        await db.execute(sql.SQL(bulk).format(sql.Identifier(table)))
    await db.execute("SELECT fluxbase_realtime.sequence_commits()")
    await db.execute("ANALYZE fluxbase_realtime.change_log")
    await db.execute(
        sql.SQL(
            "DO $$ BEGIN FOR i IN 1..{} LOOP INSERT INTO public.{} (name, price) VALUES ('x', i); COMMIT;"
            " END LOOP; END $$"
        ).format(sql.Literal(TRANSACTIONS), sql.Identifier(table))
    )
    head = (await (await db.execute("SELECT fluxbase_realtime.sequence_commits()")).fetchone() or [0])[0]

    cursor = await db.execute(
        "EXPLAIN SELECT * FROM fluxbase_realtime.changes_after(%s, 500, 16777216)", (head - 5,), prepare=False
    )
    plan = "\n".join(row[0] for row in await cursor.fetchall())
    assert "Seq Scan on change_log" not in plan, plan
    assert "change_log_pkey" in plan, plan

    rows = await (
        await db.execute("SELECT id FROM fluxbase_realtime.changes_after(%s, 500, 16777216)", (head - 5,))
    ).fetchall()
    assert [r[0] for r in rows] == list(range(head - 4, head + 1))

    # The feed's own session prepares the read and always runs its generic plan, which must not scan either.
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, options=FEED_SESSION_OPTIONS
    ) as feed:
        for after in range(head - 8, head):
            await feed.execute(READ, (after, 500, 16777216), prepare=True)
        [(name, generic_plans, custom_plans)] = await (
            await feed.execute(
                "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE %s",
                ("%read_log%",),
                prepare=False,
            )
        ).fetchall()
        assert (generic_plans, custom_plans) == (8, 0)
        explain = sql.SQL("EXPLAIN EXECUTE {}({}, 500, 16777216)").format(sql.Identifier(name), head - 5)
        generic = "\n".join(row[0] for row in await (await feed.execute(explain, prepare=False)).fetchall())
    assert "Seq Scan on change_log" not in generic and "Seq Scan on commits" not in generic, generic
    assert "change_log_pkey" in generic, generic


@pytest.fixture
def own_database(server_url: str) -> Iterator[str]:
    """A migrated database of this test's own: its statistics are the test's, not the suite's."""
    with scratch_database(server_url) as url:
        migrations.upgrade(url)
        yield url


async def test_a_sequencer_pass_does_not_scan_the_whole_log(own_database: str) -> None:
    async with await psycopg.AsyncConnection.connect(own_database, autocommit=True) as db:
        await db.execute("CREATE TABLE public.items (id bigserial PRIMARY KEY, name text, price numeric)")
        await db.execute("SELECT enable_realtime('public', 'items')")
        # A bulk load, statistics taken after it (they expect huge transactions), then a busy single-row
        # writer: measured, the old pass then scanned the whole log (19-25 ms a pass at 305,000 changes).
        await db.execute("SET synchronous_commit = off")  # this test's own writes need no flush
        await db.execute(
            "INSERT INTO public.items (name, price) SELECT 'bulk', i FROM generate_series(1, 300000) i"
        )
        await db.execute("SELECT fluxbase_realtime.sequence_commits()")
        await db.execute("ANALYZE fluxbase_realtime.change_log")
        await db.execute(
            "DO $$ BEGIN FOR i IN 1..5000 LOOP"
            " INSERT INTO public.items (name, price) VALUES ('x', i); COMMIT; END LOOP; END $$"
        )
        await db.execute("SELECT fluxbase_realtime.sequence_commits()")
        await db.execute("INSERT INTO public.items (name, price) VALUES ('sentinel', 0)")

        # This backend's statistics not yet reported: whether the pass read change_log sequentially.
        before = await _seq_scans(db)
        head = await (await db.execute("SELECT fluxbase_realtime.sequence_commits()")).fetchone()
        assert await _seq_scans(db) == before
        newest = await (
            await db.execute(
                "SELECT record::jsonb->>'name' FROM fluxbase_realtime.changes_after(%s, 1, 16777216)",
                ((head or [0])[0] - 1,),
            )
        ).fetchone()
        assert newest == ("sentinel",)  # and the pass numbered the new transaction


async def _seq_scans(db: psycopg.AsyncConnection) -> int:
    query = (
        "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relid = 'fluxbase_realtime.change_log'::regclass"
    )
    row = await (await db.execute(query)).fetchone()
    return int(row[0]) if row else 0
