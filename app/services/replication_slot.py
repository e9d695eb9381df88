"""The service's logical replication slot: creating it, noticing it was lost, its lag, dropping it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from app.services.pgoutput import parse_lsn

log = logging.getLogger(__name__)

SLOT_STATE = """
SELECT s.wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint, s.active_pid
FROM pg_replication_slots s WHERE s.slot_name = %s AND s.database = current_database()
"""


CONFIGURE = "SELECT fluxbase_realtime.configure_capture(%s, %s)"


class SlotError(RuntimeError):
    """The slot cannot be used as configured; the message says what to do."""


@dataclass(frozen=True, slots=True)
class SlotState:
    exists: bool
    wal_status: str | None = None  # 'reserved', 'extended', 'unreserved', or 'lost' (invalidated)
    lag_bytes: int | None = None  # WAL between now and what the consumer has confirmed
    active_pid: int | None = None

    @property
    def usable(self) -> bool:
        return self.exists and self.wal_status != "lost"


async def slot_state(conn: psycopg.AsyncConnection[Any], slot: str) -> SlotState:
    row = await (await conn.execute(SLOT_STATE, (slot,))).fetchone()
    if row is None:
        return SlotState(False)
    return SlotState(True, row[0], int(row[1]) if row[1] is not None else None, row[2])


async def create_slot(conn: psycopg.AsyncConnection[Any], slot: str) -> bool:
    """Create the slot unless it exists (another instance may be creating it too); True if created here."""
    try:
        await conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    except errors.DuplicateObject:
        return False
    except errors.ObjectNotInPrerequisiteState as error:
        raise SlotError(
            f"logical capture needs wal_level=logical on the database server ({error}); set it and restart "
            "PostgreSQL, or run with REALTIME_CAPTURE=trigger"
        ) from error
    except errors.InsufficientPrivilege as error:
        raise SlotError(
            f"logical capture needs a database user with the REPLICATION attribute ({error}); grant it "
            "(ALTER ROLE ... REPLICATION) or run with REALTIME_CAPTURE=trigger"
        ) from error
    log.info("logical_slot_created slot=%s", slot)
    return True


async def replace_lost_slot(conn: psycopg.AsyncConnection[Any], slot: str, state: SlotState) -> None:
    """The slot is missing or invalidated: changes since it was lost are gone. Create it anew and record
    the gap, so that subscribers get `replay_gap` instead of a silent hole."""
    log.error(
        "logical_slot_lost slot=%s state=%s: changes committed while it was missing were not captured; "
        "subscribers get replay_gap. Set max_slot_wal_keep_size with care, and watch slot_lag_bytes",
        slot,
        state.wal_status or "missing",
    )
    if state.exists:
        await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    await create_slot(conn, slot)
    await conn.execute("SELECT fluxbase_realtime.record_capture_gap()")


async def prepare_capture(
    conn: psycopg.AsyncConnection[Any],
    mode: str,
    publication: str,
    slot: str,
    drain: Callable[[int], Awaitable[None]],
) -> None:
    """At service start: set the capture mode and move every realtime table to it.

    Towards logical mode the slot is created first (see sql/logical_capture.sql for why that order
    loses nothing). Back to triggers, what committed before the switch is only in the slot: the realtime
    tables are locked against writes, `drain(lsn)` writes the slot's changes up to now into the log, and
    the switch commits; writers wait for that long. Then the slot is dropped.
    """
    row = await (await conn.execute("SELECT fluxbase_realtime.current_capture_mode()")).fetchone()
    was_logical = row is not None and row[0] == "logical"
    if mode == "logical":
        # The publication first: decoding reads it as of each change's time, so it must predate the slot.
        await conn.execute("SELECT fluxbase_realtime.ensure_publication(%s)", (publication,))
        state = await slot_state(conn, slot)
        if not state.usable:
            if was_logical:
                await replace_lost_slot(conn, slot, state)
            else:
                if state.exists:
                    await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                await create_slot(conn, slot)
        await conn.execute(CONFIGURE, (mode, publication))
        return
    state = await slot_state(conn, slot)
    if not (was_logical and state.usable):
        await conn.execute(CONFIGURE, (mode, publication))
        if state.exists:
            log.warning(
                "logical_slot_unused slot=%s lag_bytes=%s: the service captures with triggers, and the slot "
                "keeps WAL from being removed; run `fluxbase-realtime drop-slot` once no instance uses it",
                slot,
                state.lag_bytes,
            )
        return
    async with conn.transaction():
        await conn.execute("SELECT fluxbase_realtime.lock_published_tables()")
        lsn_row = await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
        assert lsn_row is not None
        try:
            await drain(parse_lsn(lsn_row[0]))
        except TimeoutError:
            raise SlotError(
                f"the slot {slot} could not be drained in time (REALTIME_SLOT_DRAIN_TIMEOUT) while switching "
                "back to triggers; nothing was switched: start again, or keep REALTIME_CAPTURE=logical"
            ) from None
        await conn.execute(CONFIGURE, (mode, publication))
    while True:  # the drain's walsender may take a moment to let go of the slot
        try:
            await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            break
        except errors.ObjectInUse:
            await asyncio.sleep(0.05)
        except errors.UndefinedObject:
            break
    log.info("logical_slot_drained slot=%s: capturing with triggers from here on", slot)


async def drop_slot(conn: psycopg.AsyncConnection[Any], slot: str) -> bool:
    """Drop the slot; False if there was none. Refused while a consumer streams it."""
    state = await slot_state(conn, slot)
    if not state.exists:
        return False
    if state.active_pid is not None:
        raise SlotError(
            f"slot {slot} is in use by the backend with pid {state.active_pid}: stop the service's instances "
            "(or set REALTIME_CAPTURE=trigger on all of them) first"
        )
    await conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    return True


class SlotMonitor:
    """Every instance in logical mode watches the slot: a warning while it holds more WAL than the setting,
    an error while it is missing or invalidated (the consumer then replaces it and records the gap)."""

    def __init__(self, pool: AsyncConnectionPool, slot: str, *, warning_bytes: int, interval: float) -> None:
        self._pool = pool
        self._slot = slot
        self._warning_bytes = warning_bytes
        self._interval = interval
        self.last: SlotState | None = None  # the latest check's answer (None: not checked yet)

    async def check(self) -> SlotState:
        async with self._pool.connection() as conn:
            state = await slot_state(conn, self._slot)
        self.last = state
        return state

    async def run(self) -> None:
        while True:
            try:
                state = await self.check()
                if not state.usable:
                    log.error(
                        "logical_slot_unusable slot=%s state=%s: changes are not being captured until the "
                        "consumer recreates it; subscribers will get replay_gap",
                        self._slot,
                        state.wal_status or "missing",
                    )
                elif state.lag_bytes is not None and state.lag_bytes > self._warning_bytes:
                    log.warning(
                        "logical_slot_lag slot=%s lag_bytes=%d limit=%d: the consumer is behind or not "
                        "running; the slot keeps this much WAL on the database server's disk",
                        self._slot,
                        state.lag_bytes,
                        self._warning_bytes,
                    )
            except psycopg.Error as error:
                log.warning("logical_slot_check_failed error=%r", type(error).__name__)
            await asyncio.sleep(self._interval)
