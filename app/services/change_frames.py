"""What the feed hands out: a committed change (`Change`), framed once per table (`ChangeFramer`), and the
newest ones held for subscribers joining live (`RecentChanges`). Pure: no I/O."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import cast

import orjson

from app.protocol import BroadcastChannel, BroadcastEncoder, Operation, TableChannel, encode_message


@dataclass(frozen=True, slots=True)
class Change:
    """One committed row change: what it is (records as JSON text), and its frame for every subscriber
    that may see all of it. `rls`: its table had row-level security enabled when it was read."""

    id: int
    channel: str
    schema: str
    table: str
    op: str
    record: str | None
    old_record: str | None
    rls: bool
    frame: str


# The op of a message sent to a broadcast channel from the database (sql/change_log.sql).
BROADCAST_OP = "BROADCAST"


class ChangeFramer:
    """Turns log rows into broadcast frames; one encoder per table, shared by live delivery and replay.

    A row with op BROADCAST is a message sent to a broadcast channel from the database: its table name is
    the channel's, its record the payload and its old record the event, as a JSON string.
    """

    def __init__(self) -> None:
        self._encoders: dict[tuple[str, str], tuple[str, BroadcastEncoder]] = {}

    def change(
        self,
        change_id: int,
        schema: str,
        table: str,
        op: str,
        record: str | None,
        old_record: str | None,
        rls: bool,
        _committed: float | None = None,  # read_log()'s commit time: the feed observes it, a frame has none
    ) -> Change:
        if op == BROADCAST_OP:
            name = BroadcastChannel(table).name
            frame = _message_frame(change_id, name, record, old_record)
            return Change(change_id, name, schema, table, op, record, old_record, False, frame)
        channel_name, encoder = self._encoder(schema, table)
        frame = encoder.encode(change_id, cast(Operation, op), record, old_record)
        return Change(change_id, channel_name, schema, table, op, record, old_record, rls, frame)

    def encode(
        self, change_id: int, schema: str, table: str, op: str, record: str | None, old_record: str | None
    ) -> str:
        return self._encoder(schema, table)[1].encode(change_id, cast(Operation, op), record, old_record)

    def _encoder(self, schema: str, table: str) -> tuple[str, BroadcastEncoder]:
        known = self._encoders.get((schema, table))
        if known is None:
            channel = TableChannel(schema, table)
            known = self._encoders[(schema, table)] = (channel.name, BroadcastEncoder(channel))
        return known


def _message_frame(change_id: int, channel: str, payload: str | None, event: str | None) -> str:
    name = orjson.loads(event) if event else ""
    return encode_message(channel, name if isinstance(name, str) else "", payload or "null", change_id)


class RecentChanges:
    """The newest published changes, consecutive ids, bounded in count and frame bytes: a subscriber
    joining live catches up from here without a query."""

    def __init__(self, *, max_changes: int = 8192, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._changes: deque[Change] = deque()
        self._bytes = 0
        self._max_changes = max_changes
        self._max_bytes = max_bytes

    def add(self, change: Change) -> None:
        if self._changes and change.id != self._changes[-1].id + 1:
            self.clear()  # a gap in the ids: what is held would no longer be provably complete
        self._changes.append(change)
        self._bytes += len(change.frame)
        while len(self._changes) > self._max_changes or (
            self._bytes > self._max_bytes and len(self._changes) > 1
        ):
            self._bytes -= len(self._changes.popleft().frame)

    def clear(self) -> None:
        self._changes.clear()
        self._bytes = 0

    def after(self, cursor: int) -> list[Change] | None:
        """Every held change after `cursor`, oldest first; None when some of them are no longer held."""
        if not self._changes or self._changes[0].id > cursor + 1:
            return None
        newer: list[Change] = []
        for change in reversed(self._changes):
            if change.id <= cursor:
                break
            newer.append(change)
        newer.reverse()
        return newer
