"""Row-level security per subscriber: which audiences may see a change, and what of it.

For a batch of changes on a table with RLS enabled, all audiences (role + claims) of one role subscribed
to it are checked in one call, for all of the batch's changes at once, by
`fluxbase_realtime.visible_changes_for`: the table's SELECT policies evaluated on each change's own values,
as that role, with each audience's claims. The rules:

- INSERT: sent if the new row is visible.
- UPDATE: visible before and after: UPDATE. Only after: sent as an INSERT (the row entered the view; its
  old values were never visible). Only before: sent as a DELETE carrying only the primary key (the row left
  the view; none of its new values are sent). Neither: nothing.
- DELETE: sent if the old row was visible.
- TRUNCATE: says nothing about any row's contents; sent to every audience whose role may SELECT a column
  of the table, without evaluating policies.
- Columns the role may not SELECT are removed from every record sent.
- A policy that raises: that audience gets an `authorization_failed` error for the change; others are
  unaffected.

Frames are built by app.services.views, where a subscription's row filter narrows this visibility.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg_pool import AsyncConnectionPool

from app.protocol import TableChannel
from app.services.audience import Audience
from app.services.change_frames import Change

log = logging.getLogger(__name__)

ACCESS = "SELECT * FROM fluxbase_realtime.table_access(%s, %s, %s)"
VISIBLE_FOR = (
    "SELECT audience, n, new_visible, old_visible FROM fluxbase_realtime.visible_changes_for"
    "(%s, %s::jsonb[], %s, %s, %s::jsonb[], %s::jsonb[]) ORDER BY audience, n"
)

Visibility = tuple[bool | None, bool | None]
FAILED: Visibility = (None, None)


@dataclass(frozen=True, slots=True)
class TableAccess:
    """What one role may see of one table (fluxbase_realtime.table_access)."""

    role_exists: bool
    rls_enabled: bool
    bypass: bool
    all_columns: tuple[str, ...]
    allowed_columns: frozenset[str]
    key_columns: tuple[str, ...]
    policy_count: int

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> TableAccess | None:
        """table_access()'s row (all NULL where a LEFT JOIN found no table): None when the table is gone."""
        exists, rls, bypass, columns, allowed, keys, policies = row
        if exists is None:
            return None
        return cls(exists, rls, bypass, tuple(columns), frozenset(allowed), tuple(keys), policies)

    @property
    def hides_columns(self) -> bool:
        return len(self.allowed_columns) < len(self.all_columns)


class RowSecurity:
    """Authorizes changes of RLS tables per audience; counts the checks it issues."""

    def __init__(self, pool: AsyncConnectionPool, *, concurrency: int) -> None:
        self._pool = pool
        self._limit = asyncio.Semaphore(concurrency)
        self.checks_issued = 0
        self.changes_checked = 0

    async def access(self, channel: TableChannel, role: str) -> TableAccess | None:
        """None when the table does not exist."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(ACCESS, (channel.schema, channel.table, role))).fetchone()
        return None if row is None else TableAccess.from_row(row)

    async def visibility(
        self, changes: Sequence[Change], audiences: Collection[Audience]
    ) -> tuple[dict[Audience, list[Visibility]], dict[str, TableAccess | None]]:
        """For changes of one table: each audience's visibility of each change (FAILED where a policy
        raised), and what each of their roles may see of the table."""
        channel = TableChannel(changes[0].schema, changes[0].table)
        roles = {a.role for a in audiences}
        accesses = dict(
            zip(roles, await asyncio.gather(*(self.access(channel, r) for r in roles)), strict=True)
        )
        # Callers pass only changes with rows: a TRUNCATE has no row to evaluate policies on, and goes to
        # every role that may SELECT a column of the table (app.services.table_views).
        visibility: dict[Audience, list[Visibility]] = {}
        to_check: dict[str, list[Audience]] = {}
        for audience in audiences:
            decided = _decided(audience, accesses[audience.role], len(changes))
            if decided is not None:
                visibility[audience] = decided
            else:
                to_check.setdefault(audience.role, []).append(audience)
        batch = list(changes)
        for checked in await asyncio.gather(
            *(self._check_role(role, group, channel, batch) for role, group in to_check.items())
        ):
            visibility.update(checked)
        self.changes_checked += len(changes)
        return visibility, accesses

    async def _check_role(
        self, role: str, audiences: list[Audience], channel: TableChannel, changes: list[Change]
    ) -> dict[Audience, list[Visibility]]:
        """Every audience of one role, in one call; audience by audience if a policy raised."""
        try:
            return await self._query(role, audiences, channel, changes)
        except psycopg.Error as error:
            log.warning(
                "rls_check_failed channel=%s role=%s error=%s: checking audience by audience",
                channel.name,
                role,
                type(error).__name__,
            )
        results = await asyncio.gather(*(self._check_audience(a, channel, changes) for a in audiences))
        return dict(zip(audiences, results, strict=True))

    async def _check_audience(
        self, audience: Audience, channel: TableChannel, changes: list[Change]
    ) -> list[Visibility]:
        try:
            return (await self._query(audience.role, [audience], channel, changes))[audience]
        except psycopg.Error:
            pass  # logged by the caller; narrowed down below
        # One policy error must not cost this audience the batch's other changes.
        results: list[Visibility] = []
        for change in changes:
            try:
                results.extend((await self._query(audience.role, [audience], channel, [change]))[audience])
            except psycopg.Error:
                results.append(FAILED)
        return results

    async def _query(
        self, role: str, audiences: list[Audience], channel: TableChannel, changes: list[Change]
    ) -> dict[Audience, list[Visibility]]:
        """One visible_changes_for call: each audience's visibility of each change, in change order."""
        self.checks_issued += 1
        async with self._limit, self._pool.connection() as conn:
            cursor = await conn.execute(
                VISIBLE_FOR,
                (role, [a.claims for a in audiences], channel.schema, channel.table, *_records(changes)),
                prepare=False,
            )
            rows = cast(list[tuple[int, int, bool | None, bool | None]], await cursor.fetchall())
        checked: dict[Audience, list[Visibility]] = {a: [] for a in audiences}
        for position, _, new_visible, old_visible in rows:  # ordered by audience, then change
            checked[audiences[position - 1]].append((new_visible, old_visible))
        return checked


def _decided(audience: Audience, access: TableAccess | None, count: int) -> list[Visibility] | None:
    """Visibility known without evaluating a policy, or None when the policies must be checked."""
    if access is None or not access.allowed_columns:
        return [(False, False)] * count
    if audience.bypasses_rls or access.bypass or not access.rls_enabled:
        return [(True, True)] * count
    if access.policy_count == 0:
        return [(False, False)] * count
    return None


def _records(changes: Sequence[Change]) -> tuple[list[str | None], list[str | None]]:
    return [c.record for c in changes], [c.old_record for c in changes]
