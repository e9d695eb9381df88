"""Ids follow commit order, by commit timestamps, where PostgreSQL records them (track_commit_timestamp).

The machine's PostgreSQL has the setting off and keeps its configuration: this runs on a private cluster
started with it on.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from app import migrations
from app.services.embedded_postgres import EmbeddedPostgres
from tests.conftest import make_settings
from tests.support.client import realtime_client
from tests.support.databases import scratch_database
from tests.support.server import ServerThread

SEQUENCER_LOCK = "SELECT pg_advisory_xact_lock(hashtext('fluxbase_realtime.sequencer'))"


@pytest.fixture(scope="module")
def stamped_database() -> Iterator[str]:
    """A migrated database on a cluster of this module's own with track_commit_timestamp on."""
    work = Path(tempfile.mkdtemp(prefix="fluxbase-commit-order-", dir="/tmp"))
    work.chmod(0o755)  # when root, the server runs as `nobody`, which must traverse it
    cluster = EmbeddedPostgres(work / "postgres", server_settings={"track_commit_timestamp": "on"})
    try:
        cluster.start()
        with scratch_database(cluster.url) as url:
            migrations.upgrade(url)
            yield url
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


async def test_a_transaction_that_wrote_first_but_committed_second_is_numbered_second(
    stamped_database: str,
) -> None:
    """A writes, B writes, B commits, A commits, and one sequencer pass sees both: B comes first."""
    table = sql.Identifier("interleaved")
    async with await psycopg.AsyncConnection.connect(stamped_database, autocommit=True) as db:
        assert (await (await db.execute("SHOW track_commit_timestamp")).fetchone()) == ("on",)
        await db.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, name text)").format(table))
        await db.execute("SELECT enable_realtime('public', 'interleaved')")
        with ServerThread(make_settings(stamped_database)) as server:
            async with (
                realtime_client(server.ws_url) as client,
                await psycopg.AsyncConnection.connect(stamped_database) as a,
                await psycopg.AsyncConnection.connect(stamped_database) as b,
                await psycopg.AsyncConnection.connect(stamped_database) as sequencer,
            ):
                await client.subscribe("table:public.interleaved")
                # Hold off every pass (the feed's included) so that one pass first sees both commits.
                await sequencer.execute(SEQUENCER_LOCK)
                insert = sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(table)
                await a.execute(insert, ("A: wrote first",))  # the lower seq: write order says A first
                await b.execute(insert, ("B: wrote second",))
                await b.commit()
                await a.commit()
                await sequencer.commit()
                received = await client.broadcasts(2)
    assert [m["payload"]["record"]["name"] for m in received] == ["B: wrote second", "A: wrote first"]
    assert received[0]["id"] < received[1]["id"]


async def test_with_timestamps_a_transaction_that_waited_on_a_row_lock_is_still_numbered_after(
    stamped_database: str,
) -> None:
    """The case write order alone got right (test_capture.py), seen by one pass, by timestamps now."""
    table = sql.Identifier("locked")
    async with await psycopg.AsyncConnection.connect(stamped_database, autocommit=True) as db:
        await db.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text)").format(table))
        await db.execute("SELECT enable_realtime('public', 'locked')")
        await db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'v0')").format(table))
        await db.execute("SELECT fluxbase_realtime.sequence_commits()")
        async with (
            await psycopg.AsyncConnection.connect(stamped_database) as older,
            await psycopg.AsyncConnection.connect(stamped_database) as younger,
            await psycopg.AsyncConnection.connect(stamped_database) as sequencer,
        ):
            await sequencer.execute(SEQUENCER_LOCK)
            await older.execute("SELECT pg_current_xact_id()")
            await younger.execute(sql.SQL("UPDATE {} SET name = 'v1' WHERE id = 1").format(table))
            blocked = asyncio.create_task(
                older.execute(sql.SQL("UPDATE {} SET name = 'v2' WHERE id = 1").format(table))
            )
            await younger.commit()
            await blocked
            await older.commit()
            await sequencer.commit()
        await db.execute("SELECT fluxbase_realtime.sequence_commits()")
        rows = await (
            await db.execute(
                "SELECT l.record->>'name' FROM fluxbase_realtime.commits c"
                " JOIN fluxbase_realtime.change_log l USING (txid)"
                " WHERE l.table_name = 'locked' AND l.op = 'UPDATE' ORDER BY c.first_id + l.ord"
            )
        ).fetchall()
    assert [name for (name,) in rows] == ["v1", "v2"]
