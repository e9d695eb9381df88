"""The polling lease that lets writers skip NOTIFY (sql/capture.sql), for tests."""

from __future__ import annotations

import asyncio
import time

import psycopg

LEASE_VALID = (
    "SELECT coalesce((SELECT until > clock_timestamp() FROM fluxbase_realtime.polling_lease), false)"
)
# Until `wake_until` (until + the grace), a sequencer pass that numbers transactions sends a wake-up of its
# own: one more notification a test that counts them would see.
WAKEUPS_ON = (
    "SELECT coalesce((SELECT wake_until > clock_timestamp() FROM fluxbase_realtime.polling_lease), false)"
)

DEADLINE = 60.0  # a bound against hanging, never a measurement of speed


async def until_writers_notify(db: psycopg.AsyncConnection) -> None:
    """Until no feed's lease lets writers skip NOTIFY, nor passes send wake-ups of their own: for tests
    that count notifications, after earlier tests' load on the shared database made its feed poll."""
    deadline = time.monotonic() + DEADLINE
    while await (await db.execute(WAKEUPS_ON)).fetchone() == (True,):
        assert time.monotonic() < deadline, "a feed kept its polling lease"
        await asyncio.sleep(0.02)
