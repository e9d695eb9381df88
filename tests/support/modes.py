"""The two capture modes in tests: databases on the logical cluster, and the settings each mode needs.

Tests that must hold in both modes are parametrized with BOTH_MODES (the `capture_mode` fixture picks the
database and the shared server); everything else runs in trigger mode only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psycopg
import pytest

from app import migrations
from tests.support.databases import scratch_database

BOTH_MODES = pytest.mark.parametrize("capture_mode", ["trigger", "logical"], indirect=True)

# Settings for a database in logical mode, by its URL (make_settings adds them).
_LOGICAL: dict[str, dict[str, object]] = {}


def capture_settings(database_url: str) -> dict[str, object]:
    return dict(_LOGICAL.get(database_url, {}))


def slot_for(database_url: str) -> str:
    return str(_LOGICAL[database_url]["realtime_slot"])


def capture_env(database_url: str) -> dict[str, str]:
    """The same settings as environment variables, for the service as a subprocess."""
    return {key.upper(): str(value) for key, value in _LOGICAL.get(database_url, {}).items()}


def logical_settings(url: str) -> dict[str, object]:
    """The settings of logical mode for this database (its own slot: slots are per cluster)."""
    slot = "slot_" + str(psycopg.conninfo.conninfo_to_dict(url)["dbname"]).removeprefix("fluxbase_test_")
    return {"realtime_capture": "logical", "realtime_slot": slot}


def switch_to_logical(url: str) -> str:
    """Create the database's slot and switch it to logical capture (as a service start would); its slot."""
    _LOGICAL[url] = logical_settings(url)
    slot = str(_LOGICAL[url]["realtime_slot"])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT fluxbase_realtime.ensure_publication('fluxbase_realtime')")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        conn.execute("SELECT fluxbase_realtime.configure_capture('logical', 'fluxbase_realtime')")
    return slot


def drop_slots(url: str) -> None:
    """Terminate the database's slot consumers and drop its slots (a slot keeps a database from being
    dropped)."""
    _LOGICAL.pop(url, None)
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(100):
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE database = current_database() AND active_pid IS NOT NULL"
            )
            try:
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE database = current_database()"
                )
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)


@contextlib.contextmanager
def logical_database(server_url: str) -> Iterator[str]:
    """A migrated database on a wal_level=logical server, switched to logical capture with its own slot
    (slots are per cluster: one per database), dropped with its slot at the end."""
    with scratch_database(server_url) as url:
        migrations.upgrade(url)
        switch_to_logical(url)
        try:
            yield url
        finally:
            drop_slots(url)
