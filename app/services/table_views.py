"""Each subscriber group's frames for a batch of table changes: row-level security and row filters
evaluated once per batch, the frames built once per distinct result (app.services.views)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from psycopg_pool import AsyncConnectionPool

from app import protocol
from app.filters.matching import FilterSet
from app.services.audience import Audience
from app.services.changes import Change, ChangeFramer
from app.services.rls import FAILED, RowSecurity, TableAccess, Visibility
from app.services.views import GroupKey, RowAccess, View, ViewFrames

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
        groups: Callable[[str], Sequence[GroupKey]],
        filters: Callable[[str], FilterSet | None],
        shaped: Callable[[str], bool],
    ) -> dict[int, GroupFrames]:
        """`groups(channel)`: who is subscribed; `filters(channel)`: their row filters; `shaped(channel)`:
        whether any of them is not plain."""
        by_channel: dict[str, list[Change]] = {}
        for change in changes:
            channel = change.channel
            if (change.rls or shaped(channel)) and groups(channel):
                by_channel.setdefault(channel, []).append(change)
        if not by_channel:
            return {}
        result: dict[int, GroupFrames] = {}
        await asyncio.gather(
            *(
                self._channel(batch, list(groups(name)), filters(name), result)
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
        await self._channel(list(changes), [group], filters, result)
        return {c.id: result[c.id].get(group) for c in changes}

    async def _channel(
        self,
        changes: list[Change],
        groups: list[GroupKey],
        filters: FilterSet | None,
        result: dict[int, GroupFrames],
    ) -> None:
        """Frames of one channel's changes for each of its groups, into `result`."""
        for change in changes:
            result[change.id] = {}
        audiences = {audience for audience, _ in groups}
        visibility: dict[Audience, list[Visibility]] = {}
        accesses: dict[str, TableAccess | None] = {}
        rls = [c for c in changes if c.rls]
        if rls:
            # Changes of one table read in one batch agree on `rls` unless it was switched mid-batch:
            # those without are visible to all.
            checked, accesses = await self._rls.visibility(rls, audiences)
            for audience in audiences:
                checks = iter(checked[audience])
                visibility[audience] = [next(checks) if c.rls else ALL_VISIBLE for c in changes]
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
        frames = ViewFrames(self._framer)
        for audience, view in groups:
            access = _row_access(audience, accesses.get(audience.role), rls=bool(rls))
            seen = visibility.get(audience)
            for position, change in enumerate(changes):
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
                    key = view.filter_key
                    in_new = key is None or key in new_matches[position]
                    in_old = key is None or key in old_matches[position]
                    frame = frames.frame(
                        change,
                        view,
                        access,
                        new_visible=bool(rls_new) and in_new,
                        old_visible=bool(rls_old) and in_old,
                        rls_hides_new=not rls_new,
                    )
                result[change.id][(audience, view)] = frame


def _row_access(audience: Audience, access: TableAccess | None, *, rls: bool) -> RowAccess | None:
    """What the audience may see of the records; None: nothing (the table is gone)."""
    if not rls:
        return RowAccess(None, ())
    if access is None:
        return None
    trusted = audience.bypasses_rls or not access.hides_columns
    return RowAccess(None if trusted else access.allowed_columns, access.key_columns)
