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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from app import protocol
from app.protocol import Operation, TableChannel
from app.services.audience import Audience
from app.services.changes import Change, ChangeFramer

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

    @property
    def hides_columns(self) -> bool:
        return len(self.allowed_columns) < len(self.all_columns)


class RowSecurity:
    """Authorizes changes of RLS tables per audience; counts the checks it issues."""

    def __init__(self, pool: AsyncConnectionPool, framer: ChangeFramer, *, concurrency: int) -> None:
        self._pool = pool
        self._framer = framer
        self._limit = asyncio.Semaphore(concurrency)
        self.checks_issued = 0
        self.changes_checked = 0

    async def access(self, channel: TableChannel, role: str) -> TableAccess | None:
        """None when the table does not exist."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(ACCESS, (channel.schema, channel.table, role))).fetchone()
        if row is None:
            return None
        exists, rls, bypass, columns, allowed, keys, policies = row
        return TableAccess(exists, rls, bypass, tuple(columns), frozenset(allowed), tuple(keys), policies)

    async def authorize(
        self, changes: Sequence[Change], audiences: Callable[[str], Collection[Audience]]
    ) -> dict[int, dict[Audience, str | None]]:
        """For every change of an RLS table that has audiences: each audience's frame, or None."""
        by_channel: dict[str, list[Change]] = {}
        for change in changes:
            if change.rls and audiences(change.channel):
                by_channel.setdefault(change.channel, []).append(change)
        frames: dict[int, dict[Audience, str | None]] = {c.id: {} for cs in by_channel.values() for c in cs}
        await asyncio.gather(
            *(
                self._authorize_channel(batch, list(audiences(name)), frames)
                for name, batch in by_channel.items()
            )
        )
        self.changes_checked += len(frames)
        return frames

    async def authorize_for(
        self, changes: Sequence[Change], audience: Audience
    ) -> dict[int, dict[Audience, str | None]]:
        """`authorize` for one audience (a replay to one subscriber)."""
        return await self.authorize(changes, lambda _channel: (audience,))

    async def _authorize_channel(
        self, changes: list[Change], audiences: list[Audience], frames: dict[int, dict[Audience, str | None]]
    ) -> None:
        channel = TableChannel(changes[0].schema, changes[0].table)
        roles = {a.role for a in audiences}
        accesses = dict(
            zip(roles, await asyncio.gather(*(self.access(channel, r) for r in roles)), strict=True)
        )
        # A TRUNCATE has no row to evaluate policies on: it goes to every role that may SELECT the table.
        rows = [c for c in changes if c.op != "TRUNCATE"]
        visibility: dict[Audience, list[Visibility]] = {}
        to_check: dict[str, list[Audience]] = {}
        for audience in audiences:
            decided = _decided(audience, accesses[audience.role], len(rows))
            if decided is not None or not rows:
                visibility[audience] = decided or []
            else:
                to_check.setdefault(audience.role, []).append(audience)
        for checked in await asyncio.gather(
            *(self._check_role(role, group, channel, rows) for role, group in to_check.items())
        ):
            visibility.update(checked)
        parsed: dict[int, tuple[Any, Any]] = {}
        for audience in audiences:
            visible = iter(visibility[audience])
            access = accesses[audience.role]
            for change in changes:
                if change.op == "TRUNCATE":
                    may_select = access is not None and bool(access.allowed_columns)
                    frames[change.id][audience] = change.frame if may_select else None
                    continue
                new_visible, old_visible = next(visible)
                if (new_visible, old_visible) == FAILED and access is not None:
                    frame: str | None = protocol.encode_error(
                        f"change {change.id} could not be authorized: a row-level security policy failed",
                        channel=change.channel,
                        code="authorization_failed",
                    )
                else:
                    frame = self._frame_for(change, audience, access, new_visible, old_visible, parsed)
                frames[change.id][audience] = frame

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

    def _frame_for(
        self,
        change: Change,
        audience: Audience,
        access: TableAccess | None,
        new_visible: bool | None,
        old_visible: bool | None,
        parsed: dict[int, tuple[Any, Any]],
    ) -> str | None:
        if access is None:
            return None
        op = cast(Operation, change.op)
        keys_only = False
        if op == "UPDATE" and new_visible and not old_visible:
            op = "INSERT"  # entered the view
        elif op == "UPDATE" and old_visible and not new_visible:
            op, keys_only = "DELETE", True  # left the view
        elif not (new_visible if op != "DELETE" else old_visible):
            return None
        trusted = audience.bypasses_rls or not access.hides_columns
        if op == change.op and trusted:
            return change.frame  # the shared frame, serialized once
        if change.id not in parsed:
            parsed[change.id] = (
                orjson.loads(change.record) if change.record else None,
                orjson.loads(change.old_record) if change.old_record else None,
            )
        record, old_record = parsed[change.id]
        allowed: Collection[str] = access.allowed_columns if not audience.bypasses_rls else access.all_columns
        if keys_only:
            allowed = [k for k in access.key_columns if k in allowed]
        return self._framer.encode(
            change.id,
            change.schema,
            change.table,
            op,
            _only(record, allowed) if op != "DELETE" else None,
            _only(old_record, allowed) if op != "INSERT" else None,
        )


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


def _only(record: Any, columns: Collection[str]) -> str | None:
    if record is None:
        return None
    return orjson.dumps({k: v for k, v in record.items() if k in columns}).decode()
