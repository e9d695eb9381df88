"""Typed messages in, server text frames out. A frame is built once per message and shared by every
subscriber it goes to; JSON that arrived or was stored as text is embedded as it is, never re-parsed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import orjson

from app.protocol.channels import TableChannel
from app.protocol.common import Ref

Operation = Literal["INSERT", "UPDATE", "DELETE", "TRUNCATE"]

HEARTBEAT = '{"type":"heartbeat"}'


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def encode_ack(
    channel: str, ref: Ref | None = None, subscription: str | None = None, since: int | None = None
) -> str:
    """`since`: for a subscribe from "now", the change id the subscription starts after, as a string of
    digits (ids may exceed a JS number): a client that is cut off before any change reached it resumes
    with it, and misses nothing."""
    message: dict[str, object] = {"type": "ack", "channel": channel}
    if subscription is not None:
        message["subscription"] = subscription
    if since is not None:
        message["since"] = str(since)
    if ref is not None:
        message["ref"] = ref
    return _dumps(message)


def encode_reply(ref: Ref | None = None) -> str:
    """An ack of a request that names no channel (an access_token)."""
    message: dict[str, object] = {"type": "ack"}
    if ref is not None:
        message["ref"] = ref
    return _dumps(message)


def encode_error(
    error: str,
    *,
    ref: Ref | None = None,
    channel: str | None = None,
    code: str | None = None,
    subscription: str | None = None,
    retry_after: int | None = None,
) -> str:
    """`retry_after`: seconds the client should wait before trying again (a refusal for load)."""
    message: dict[str, object] = {"type": "error", "error": error}
    if channel is not None:
        message["channel"] = channel
    if subscription is not None:
        message["subscription"] = subscription
    if code is not None:
        message["code"] = code
    if retry_after is not None:
        message["retry_after"] = retry_after
    if ref is not None:
        message["ref"] = ref
    return _dumps(message)


class BroadcastEncoder:
    """Frames changes of one table. Built once per table; the JSON of its names is computed once."""

    __slots__ = ("_prefix", "_tail")

    def __init__(self, channel: TableChannel) -> None:
        self._prefix = '{"type":"broadcast","channel":' + _dumps(channel.name) + ',"id":'
        self._tail = ',"table":' + _dumps(channel.table) + ',"schema":' + _dumps(channel.schema)

    def encode(self, change_id: int, op: Operation, record: str | None, old_record: str | None) -> str:
        """`record` and `old_record` are JSON text as PostgreSQL produced it; they are not parsed here."""
        head = f'{self._prefix}{change_id},"payload":{{"type":"{op}"{self._tail}'
        if op == "INSERT":
            return f'{head},"record":{record}}}}}'
        if op == "UPDATE":
            return f'{head},"record":{record},"old_record":{old_record}}}}}'
        if op == "TRUNCATE":  # every row of the table is gone: no record
            if record is not None:  # only the rows that were in this partition (sql/realtime_tables.sql)
                return f'{head},"partition":{record}}}}}'
            return f"{head}}}}}"
        return f'{head},"old_record":{old_record}}}}}'


def encode_message(channel: str, event: str, payload: str, change_id: int | None = None) -> str:
    """A broadcast channel's message; `payload` is JSON text. Messages from the database (and HTTP) went
    through the change log and carry its `id`; messages from clients do not."""
    head = '{"type":"broadcast","channel":' + _dumps(channel)
    if change_id is not None:
        head += f',"id":{change_id}'
    return f'{head},"event":{_dumps(event)},"payload":{payload}}}'


# Presence: key -> entries; an entry is (presence_id, state as JSON text).
PresenceEntries = Mapping[str, Sequence[tuple[str, str]]]


def _presences(entries: PresenceEntries) -> dict[str, list[dict[str, object]]]:
    return {
        key: [{"presence_id": pid, "state": orjson.Fragment(state)} for pid, state in items]
        for key, items in entries.items()
    }


def encode_presence_state(channel: str, entries: PresenceEntries) -> str:
    """Everyone present on the channel, sent to a subscriber right after its subscribe's ack."""
    return _dumps({"type": "presence_state", "channel": channel, "presences": _presences(entries)})


def encode_presence_diff(
    channel: str, joins: PresenceEntries, updates: PresenceEntries, leaves: PresenceEntries
) -> str:
    """What changed: presences that joined, that changed state (the same presence_id), and that left
    (with their last state). An update is never a leave and a join."""
    return _dumps(
        {
            "type": "presence_diff",
            "channel": channel,
            "joins": _presences(joins),
            "updates": _presences(updates),
            "leaves": _presences(leaves),
        }
    )
