"""Each subscriber group's frames for a batch of table changes: row-level security and row filters
evaluated once per batch, the frames built once per distinct result (app.services.views)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence

from psycopg_pool import AsyncConnectionPool

from app import protocol
from app.filters.matching import FilterSet
from app.protocol import TableChannel
from app.services.audience import Audience
from app.services.change_frames import Change, ChangeFramer
from app.services.rls import FAILED, RowSecurity, TableAccess, Visibility
from app.services.views import ROW_OPERATIONS, GroupKey, RowAccess, View, ViewFrames

GroupFrames = dict[GroupKey, str | None]
ALL_VISIBLE: Visibility = (True, True)

log = logging.getLogger(__name__)


class TableViews:
    """Frames per group (audience and view) for the changes that need them: those of tables with
    row-level security, and of channels with a subscription that is not plain. Changes of other
    channels are absent from the result: every subscriber gets the change's shared frame."""

    def __init__(self, pool: AsyncConnectionPool, framer: ChangeFramer, rls: RowSecurity) -> None:
        self._pool = pool
        self._framer = framer
        self._rls = rls

    async def frames(
        self,
        changes: Sequence[Change],
        groups_by_filter: Callable[[str], Mapping[str | None, Collection[GroupKey]]],
        filters: Callable[[str], FilterSet | None],
        shaped: Callable[[str], bool],
    ) -> dict[int, GroupFrames]:
        """`groups_by_filter(channel)`: who is subscribed, by row filter; `filters(channel)`: those
        filters; `shaped(channel)`: whether any subscription of it is not plain."""
        by_channel: dict[str, list[Change]] = {}
        for change in changes:
            channel = change.channel
            if change.rls or shaped(channel):
                by_channel.setdefault(channel, []).append(change)
        if not by_channel:
            return {}
        result: dict[int, GroupFrames] = {}
        await asyncio.gather(
            *(
                self._channel(batch, groups_by_filter(name), filters(name), result)
                for name, batch in by_channel.items()
            )
        )
        return result

    async def frames_for(
        self, changes: Sequence[Change], audience: Audience, view: View
    ) -> dict[int, str | None]:
        """The frames of one subscriber's changes of one channel (a replay)."""
        if not changes or (view.plain and not any(c.rls for c in changes)):
            return {c.id: c.frame for c in changes}
        filters: FilterSet | None = None
        if view.filter is not None:
            filters = FilterSet()
            filters.add(view.filter)
        result: dict[int, GroupFrames] = {}
        group = (audience, view)
        await self._channel(list(changes), {view.filter_key: [group]}, filters, result)
        return {c.id: result[c.id].get(group) for c in changes}

    async def _channel(
        self,
        changes: list[Change],
        by_filter: Mapping[str | None, Collection[GroupKey]],
        filters: FilterSet | None,
        result: dict[int, GroupFrames],
    ) -> None:
        """Frames of one channel's changes for the groups each change concerns, into `result`: the
        groups without a filter, and those whose filter the new or the old record matches (found through
        the filter set's index); every other group gets nothing, without being visited."""
        for change in changes:
            result[change.id] = {}
        new_matches: list[frozenset[str]] = []
        old_matches: list[frozenset[str]] = []
        if filters is not None and len(filters):
            first = changes[0]
            async with self._pool.connection() as conn:
                matched = await filters.match(
                    conn,
                    first.schema,
                    first.table,
                    [c.record for c in changes] + [c.old_record for c in changes],
                )
            new_matches, old_matches = matched[: len(changes)], matched[len(changes) :]
        unfiltered = list(by_filter.get(None, ()))
        concerned: list[list[GroupKey]] = []
        for position, change in enumerate(changes):
            if change.op not in ROW_OPERATIONS:
                # A TRUNCATE empties every view of the table: it concerns every group.
                concerned.append([group for groups in list(by_filter.values()) for group in groups])
                continue
            groups = list(unfiltered)
            if new_matches:
                for key in new_matches[position] | old_matches[position]:
                    groups.extend(by_filter.get(key, ()))
            concerned.append(groups)
        visibility: dict[Audience, list[Visibility]] = {}
        accesses: dict[str, TableAccess | None] = {}
        audiences = {audience for groups in concerned for audience, _ in groups}
        rows = [c for c in changes if c.rls and c.op in ROW_OPERATIONS]
        if rows and audiences:
            # Changes of one table read in one batch agree on `rls` unless it was switched mid-batch:
            # those without are visible to all, as are changes without a row (their audience's role
            # must still be allowed to read the table: access below).
            checked, accesses = await self._rls.visibility(rows, audiences)
            for audience in audiences:
                checks = iter(checked[audience])
                visibility[audience] = [
                    next(checks) if c.rls and c.op in ROW_OPERATIONS else ALL_VISIBLE for c in changes
                ]
        elif audiences and any(c.rls for c in changes):
            first = changes[0]
            channel = TableChannel(first.schema, first.table)
            roles = list({audience.role for audience in audiences})
            found = await asyncio.gather(*(self._rls.access(channel, role) for role in roles))
            accesses = dict(zip(roles, found, strict=True))
        frames = ViewFrames(self._framer)
        for position, change in enumerate(changes):
            per_group = result[change.id]
            for audience, view in concerned[position]:
                access = _row_access(audience, accesses.get(audience.role), rls=change.rls)
                seen = visibility.get(audience)
                rls_new, rls_old = seen[position] if seen is not None else ALL_VISIBLE
                if (rls_new, rls_old) == FAILED and access is not None:
                    frame: str | None = protocol.encode_error(
                        f"change {change.id} could not be authorized: a row-level security policy failed",
                        channel=change.channel,
                        code="authorization_failed",
                    )
                elif access is None:
                    frame = None
                else:
                    wanted = view.filter_key
                    frame = frames.frame(
                        change,
                        view,
                        access,
                        new_visible=bool(rls_new) and (wanted is None or wanted in new_matches[position]),
                        old_visible=bool(rls_old) and (wanted is None or wanted in old_matches[position]),
                        rls_hides_new=not rls_new,
                    )
                per_group[(audience, view)] = frame


def _row_access(audience: Audience, access: TableAccess | None, *, rls: bool) -> RowAccess | None:
    """What the audience may see of the records; None: nothing (the table is gone, or the role may not
    SELECT any of its columns: not even a TRUNCATE, which carries no row, is for it)."""
    if not rls:
        return RowAccess(None, ())
    if access is None or not access.allowed_columns:
        return None
    trusted = audience.bypasses_rls or not access.hides_columns
    return RowAccess(None if trusted else access.allowed_columns, access.key_columns)
