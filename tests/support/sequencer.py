"""Holding the sequencer's lock from a test, so that subscribes' passes wait (a busy database, for real)."""

from __future__ import annotations

SEQUENCER_LOCK = "SELECT pg_advisory_lock(hashtext('fluxbase_realtime.sequencer'))"
SEQUENCER_UNLOCK = "SELECT pg_advisory_unlock(hashtext('fluxbase_realtime.sequencer'))"
# Sessions of this database waiting for an advisory lock: a pass blocked behind the test's hold.
WAITING_FOR_ADVISORY_LOCK = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND NOT granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
