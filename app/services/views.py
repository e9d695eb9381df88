"""Views: what one subscription asks of a table channel (a row filter, events, columns, its own id), and
how a change looks through it. Pure: visibility comes in, a frame (or nothing) goes out.

A view delivers the changes of the rows it can see, so that a client applying them by primary key holds
exactly those rows. A row is visible when it matches the filter and the audience's row-level security
policies. An UPDATE that keeps the row visible is an UPDATE; into view, an INSERT (the new record); out
of view, a DELETE (the old record, or only its key when row-level security hides the new row, as for
unfiltered subscribers); neither, nothing. Events are chosen after that translation (a row moving into
view arrives as the INSERT it is to the client).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.filters.evaluate import TableFilter
from app.services.audience import Audience
from app.services.change_frames import Change, ChangeFramer

# A subscription's key in a subscriber's channels: the channel's name, or the name and the client's
# subscription id after a NUL (which no channel name contains).
SUBSCRIPTION_SEPARATOR = "\x00"


def subscription_key(channel: str, subscription: str | None) -> str:
    return channel if subscription is None else f"{channel}{SUBSCRIPTION_SEPARATOR}{subscription}"


def channel_of(key: str) -> str:
    return key.partition(SUBSCRIPTION_SEPARATOR)[0]


@dataclass(frozen=True, slots=True)
class View:
    """One subscription's shape. Views that are equal share one evaluation and one frame per change."""

    filter_key: str | None = None
    events: frozenset[str] | None = None
    columns: frozenset[str] | None = None  # with the primary key, always
    subscription: str | None = None
    filter: TableFilter | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def plain(self) -> bool:
        """Every change, as it is: what a subscribe without options gets."""
        return (
            self.filter_key is None
            and self.events is None
            and self.columns is None
            and self.subscription is None
        )


PLAIN = View()
GroupKey = tuple[Audience, View]


@dataclass(slots=True)
class RowAccess:
    """What an audience may see of a table's records: None for every column (no row-level security, or
    an audience that bypasses it); key columns for a DELETE that only names the row."""

    allowed: frozenset[str] | None
    keys: tuple[str, ...]


class ViewFrames:
    """Frames of one batch through many views: each distinct frame is built (and serialized) once."""

    def __init__(self, framer: ChangeFramer) -> None:
        self._framer = framer
        self._parsed: dict[int, tuple[Any, Any]] = {}
        self._frames: dict[tuple[int, str, bool, frozenset[str] | None, str | None], str] = {}

    def frame(
        self,
        change: Change,
        view: View,
        access: RowAccess,
        *,
        new_visible: bool,
        old_visible: bool,
        rls_hides_new: bool,
    ) -> str | None:
        """The change as `view` sees it, or None. `rls_hides_new`: the new row is out of the audience's
        policies (an exit from view then names only the key)."""
        op = change.op
        keys_only = False
        if op == "UPDATE":
            if not new_visible and not old_visible:
                return None
            if not old_visible:
                op = "INSERT"
            elif not new_visible:
                op, keys_only = "DELETE", rls_hides_new
        elif (op == "INSERT" and not new_visible) or (op == "DELETE" and not old_visible):
            return None
        if view.events is not None and op not in view.events:
            return None
        columns = view.columns
        if access.allowed is not None:
            columns = access.allowed if columns is None else columns & access.allowed
        if keys_only:
            columns = frozenset(k for k in access.keys if columns is None or k in columns)
        cache = (change.id, op, keys_only, columns, view.subscription)
        known = self._frames.get(cache)
        if known is not None:
            return known
        if (op == change.op and columns is None) or op not in ROW_OPERATIONS:
            text = change.frame  # the shared frame, serialized once
        else:
            record, old_record = self._records(change)
            text = self._framer.encode(
                change.id,
                change.schema,
                change.table,
                op,
                _only(record, columns) if op != "DELETE" else None,
                _only(old_record, columns) if op != "INSERT" else None,
            )
        if view.subscription is not None:
            text = with_subscription(text, view.subscription)
        self._frames[cache] = text
        return text

    def _records(self, change: Change) -> tuple[Any, Any]:
        parsed = self._parsed.get(change.id)
        if parsed is None:
            parsed = self._parsed[change.id] = (
                orjson.loads(change.record) if change.record else None,
                orjson.loads(change.old_record) if change.old_record else None,
            )
        return parsed


ROW_OPERATIONS = frozenset({"INSERT", "UPDATE", "DELETE"})
BROADCAST_HEAD = '{"type":"broadcast",'


def with_subscription(frame: str, subscription: str) -> str:
    """A table broadcast frame that names the client's subscription it is for."""
    assert frame.startswith(BROADCAST_HEAD)
    return (
        f'{BROADCAST_HEAD}"subscription":{orjson.dumps(subscription).decode()},{frame[len(BROADCAST_HEAD) :]}'
    )


def _only(record: Any, columns: Collection[str] | None) -> str | None:
    if record is None:
        return None
    if columns is None:
        return orjson.dumps(record).decode()
    return orjson.dumps({k: v for k, v in record.items() if k in columns}).decode()
