"""A subscribe's checks stay fresh on a connection that keeps their plans (sql/README.md, hot paths).

table_status() and table_access() are PL/pgSQL, whose statements keep their plans for the session (after
five custom plans, a generic one). Each case asks the same question often enough on one pooled
connection for every plan involved to be the cached generic one, changes the catalogs from another
connection, and asks again on the first: the answer is the new one, as it was when every call planned
its statements anew.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from app import migrations
from app.protocol import TableChannel
from app.services.changes import SESSION_OPTIONS
from app.services.tables import Check, TableDirectory, TableStatus
from tests.support.databases import scratch_database
from tests.support.modes import BOTH_MODES

# Past the five custom plans after which PostgreSQL settles on a statement's generic plan.
REPEATS = 8


@pytest.fixture
async def directory(database_url: str) -> AsyncIterator[TableDirectory]:
    """The service's TableDirectory on a pool of one connection: every check runs in the same session."""
    async with AsyncConnectionPool(
        database_url, min_size=1, max_size=1, open=False,
        kwargs={"autocommit": True, "options": SESSION_OPTIONS},
    ) as pool:
        yield TableDirectory(pool)


async def _settled(directory: TableDirectory, table: str, role: str = "authenticated") -> Check:
    """The check's answer, asked REPEATS times on the one connection: it must not change meanwhile."""
    channel = TableChannel(schema="public", table=table)
    answers = [await directory.check(channel, role) for _ in range(REPEATS)]
    assert all(answer == answers[0] for answer in answers), answers
    return answers[0]


@BOTH_MODES
async def test_checks_on_one_connection_see_each_catalog_change(
    db: psycopg.AsyncConnection, directory: TableDirectory
) -> None:
    name = f"checked_{uuid.uuid4().hex[:10]}"
    table = sql.Identifier(name)
    await db.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, secret text)").format(table))
    await db.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table))
    await db.execute(sql.SQL("GRANT SELECT ON {} TO authenticated").format(table))

    status, access = await _settled(directory, name)
    assert status is TableStatus.DISABLED
    assert access is not None and access.rls_enabled and access.policy_count == 0

    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    status, _ = await _settled(directory, name)
    assert status is TableStatus.ENABLED

    await db.execute(
        sql.SQL("CREATE POLICY mine ON {} FOR SELECT TO authenticated USING (true)").format(table)
    )
    _, access = await _settled(directory, name)
    assert access is not None and access.policy_count == 1

    await db.execute(sql.SQL("REVOKE SELECT ON {} FROM authenticated").format(table))
    await db.execute(sql.SQL("GRANT SELECT (id, title) ON {} TO authenticated").format(table))
    _, access = await _settled(directory, name)
    assert access is not None and access.allowed_columns == {"id", "title"}

    await db.execute("SELECT disable_realtime('public', %s)", (name,))
    status, _ = await _settled(directory, name)
    assert status is TableStatus.DISABLED

    # Dropped, then created again under the same name: another OID, other columns, no policy.
    await db.execute(sql.SQL("DROP TABLE {}").format(table))
    status, access = await _settled(directory, name)
    assert (status, access) == (TableStatus.MISSING, None)
    await db.execute(sql.SQL("CREATE TABLE {} (key text PRIMARY KEY)").format(table))
    await db.execute(sql.SQL("GRANT SELECT ON {} TO authenticated").format(table))
    await db.execute("SELECT enable_realtime('public', %s)", (name,))
    status, access = await _settled(directory, name)
    assert status is TableStatus.ENABLED
    assert access is not None and not access.rls_enabled and access.all_columns == ("key",)
    assert access.key_columns == ("key",) and access.policy_count == 0


@BOTH_MODES
async def test_a_table_attached_under_a_realtime_root_becomes_a_partition_on_the_same_connection(
    db: psycopg.AsyncConnection, directory: TableDirectory
) -> None:
    root, part = (f"{prefix}_{uuid.uuid4().hex[:10]}" for prefix in ("root", "part"))
    await db.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY) PARTITION BY RANGE (id)").format(sql.Identifier(root))
    )
    await db.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(part)))
    await db.execute("SELECT enable_realtime('public', %s)", (root,))
    status, _ = await _settled(directory, part)
    assert status is TableStatus.DISABLED

    await db.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (0) TO (100)").format(
            sql.Identifier(root), sql.Identifier(part)
        )
    )
    status, _ = await _settled(directory, part)
    assert status is TableStatus.PARTITION
    through = await directory.captured_through(TableChannel(schema="public", table=part))
    assert through == f"table:public.{root}"


def test_the_capture_function_created_again_is_recognised_by_a_connection_that_checked_before(
    server_url: str,
) -> None:
    """notify_table_change() dropped (with every capture trigger) and created again has another OID: the
    trigger lookups resolve it at each call, so a session's cached plans do not keep the old one."""
    with scratch_database(server_url) as url:
        migrations.upgrade(url)
        status = "SELECT fluxbase_realtime.table_status('public', 'items')"
        with psycopg.connect(url, autocommit=True) as checker, psycopg.connect(url, autocommit=True) as admin:
            admin.execute("CREATE TABLE items (id int PRIMARY KEY)")
            admin.execute("SELECT enable_realtime('public', 'items')")
            assert {checker.execute(status).fetchone() for _ in range(REPEATS)} == {("enabled",)}
            admin.execute("DROP FUNCTION public.notify_table_change() CASCADE")
            admin.execute("SELECT fluxbase_realtime.install_capture_function('fluxbase_changes')")
            assert {checker.execute(status).fetchone() for _ in range(REPEATS)} == {("disabled",)}
            admin.execute("SELECT enable_realtime('public', 'items')")
            assert {checker.execute(status).fetchone() for _ in range(REPEATS)} == {("enabled",)}
