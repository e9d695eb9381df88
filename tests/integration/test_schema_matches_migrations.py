"""sql/ is the current schema: built from it, a database has exactly what every migration leaves.

Two empty databases on the test server: one gets every Alembic migration (app.migrations.upgrade, each
running its frozen files in alembic/versions/sql/), the other sql/ in the order of sql/schema.txt. Their
catalogs are compared object by object (tests/support/schema_catalog.py). A migration that changes the
schema without the same change in sql/, or an edit of sql/ that no migration makes, fails here with a diff
of the objects concerned.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from app import migrations
from tests.support.databases import scratch_database
from tests.support.schema_catalog import (
    SCHEMA_DIR,
    SCHEMA_INDEX,
    Catalog,
    apply_schema,
    catalog,
    catalog_diff,
    schema_files,
)


@pytest.fixture(scope="module")
def migrated_url(server_url: str) -> Iterator[str]:
    with scratch_database(server_url) as url:
        migrations.upgrade(url)
        yield url


@pytest.fixture(scope="module")
def from_sql_url(server_url: str) -> Iterator[str]:
    with scratch_database(server_url) as url:
        apply_schema(url)
        yield url


def read_catalog(url: str) -> Catalog:
    with psycopg.connect(url) as connection:
        return catalog(connection)


def test_sql_builds_what_every_migration_leaves(migrated_url: str, from_sql_url: str) -> None:
    migrated, from_sql = read_catalog(migrated_url), read_catalog(from_sql_url)
    # Not vacuous: the objects that every later migration builds on are there to compare.
    for key in (
        "function public.notify_table_change()",
        "function public.enable_realtime(schema_name text, table_name text)",
        "relation fluxbase_realtime.change_log",
        "policy fluxbase_realtime_access.broadcast_channels public_channels",
        "rows fluxbase_realtime.capture_mode",
    ):
        assert key in migrated
    difference = catalog_diff(migrated, from_sql)
    assert not difference, (
        "sql/ and the migrations disagree: a schema change goes into a new migration (with its own frozen "
        "file in alembic/versions/sql/) AND into sql/, edited in place (sql/README.md)\n" + difference
    )


def test_the_comparison_sees_each_kind_of_difference(from_sql_url: str) -> None:
    """The comparison itself: on a copy of the sql/ database changed in a transaction (rolled back), each
    kind of change is reported by name."""
    before = read_catalog(from_sql_url)
    with psycopg.connect(from_sql_url) as connection:
        connection.execute("""
            CREATE OR REPLACE FUNCTION fluxbase_realtime.oldest_retained_id() RETURNS bigint
            LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$ SELECT 0::bigint $$;
            DROP FUNCTION fluxbase_realtime.record_capture_gap();
            GRANT EXECUTE ON FUNCTION fluxbase_realtime.prune_change_log(interval, bigint, integer) TO PUBLIC;
            ALTER FUNCTION fluxbase_realtime.sequence_commits() RESET jit;
            ALTER TABLE fluxbase_realtime.bus_packets SET LOGGED;
            ALTER TABLE fluxbase_realtime.commits ALTER COLUMN committed_at SET DEFAULT now();
            CREATE INDEX sentinel_index ON fluxbase_realtime.commits (txid);
            ALTER POLICY public_channels ON fluxbase_realtime_access.broadcast_channels USING (channel <> '');
            UPDATE fluxbase_realtime.capture_mode SET publication = 'sentinel';
        """)
        changed = catalog(connection)
        connection.rollback()
    report = catalog_diff(before, changed)
    for expected in (
        "defined differently: function fluxbase_realtime.oldest_retained_id()",
        "missing from sql/: function fluxbase_realtime.record_capture_gap()",
        "defined differently: function fluxbase_realtime.prune_change_log(",
        "defined differently: function fluxbase_realtime.sequence_commits()",
        "defined differently: relation fluxbase_realtime.bus_packets",
        "defined differently: column fluxbase_realtime.commits.committed_at",
        "only in sql/ (no migration makes it): index fluxbase_realtime.sentinel_index",
        "defined differently: policy fluxbase_realtime_access.broadcast_channels public_channels",
        "defined differently: rows fluxbase_realtime.capture_mode",
    ):
        assert expected in report, report
    assert catalog_diff(before, read_catalog(from_sql_url)) == ""


def test_every_file_of_sql_is_applied_once() -> None:
    listed = [path.name for path in schema_files()]
    assert len(listed) == len(set(listed)), f"{SCHEMA_INDEX.name} lists a file twice: {listed}"
    on_disk = sorted(path.name for path in SCHEMA_DIR.glob("*.sql"))
    assert sorted(listed) == on_disk, f"{SCHEMA_INDEX.name} must list every file of sql/, and only those"
