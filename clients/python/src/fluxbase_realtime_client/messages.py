"""What the server sends, as typed values: one text frame in, one message out.

Pure functions with no I/O, so every rule here is tested without a socket. A frame that does not match the
protocol raises MalformedMessage (the client logs it and reads on); a message type this version does not
know becomes `Unknown`, so that a newer server never breaks an older client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fluxbase_realtime_client.retry_after import frame_retry_after

Ref = str | int
Record = dict[str, Any]

TABLE_PREFIX = "table:"
BROADCAST_PREFIX = "broadcast:"


class MalformedMessage(ValueError):
    """A server frame that is not valid JSON or does not have the shape the protocol gives it."""


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a request that carried `ref` (or to a subscribe: `channel` is set).

    `since`: for a subscribe, the change id the subscription starts after, when the server says so; a
    client that resumes with it misses nothing even when no change arrived before the disconnect.
    """

    channel: str | None = None
    ref: Ref | None = None
    subscription: str | None = None
    since: int | None = None


@dataclass(frozen=True, slots=True)
class Error:
    """An `error` frame: `error` is a readable sentence, `code` a stable name (replay_gap, token_expired)."""

    error: str
    code: str | None = None
    channel: str | None = None
    ref: Ref | None = None
    subscription: str | None = None
    # Seconds to wait before trying again, when the server refused for load (subscribe_failed).
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent every heartbeat interval whatever the client does: proof that the connection is alive."""


@dataclass(frozen=True, slots=True)
class Change:
    """One committed row change of a table channel, in id order.

    `id` is the change's position in the server's change log: resume after it with `since=id`.
    `record` is the new row (INSERT, UPDATE), `old_record` the previous one (UPDATE, DELETE).
    `partition` (schema, table): a TRUNCATE that named one partition of this partitioned table emptied
    only that partition's rows (the stream then yields a Reset: reload the table).
    """

    id: int
    type: str
    schema: str
    table: str
    record: Record | None = field(default=None, repr=False)  # row contents stay out of reprs and logs
    old_record: Record | None = field(default=None, repr=False)
    channel: str = ""
    subscription: str | None = None
    partition: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A message on a `broadcast:` channel: from a client (`id` is None) or from the database or HTTP
    (`id` is its change-log id, and `since` replays it)."""

    channel: str
    event: str
    payload: Any = field(repr=False)
    id: int | None = None
    subscription: str | None = None


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One presence of a key: one connection's `track` on one channel."""

    presence_id: str
    state: Any


Presences = dict[str, tuple[PresenceEntry, ...]]


@dataclass(frozen=True, slots=True)
class PresenceState:
    """The channel's full presence state, sent right after the subscribe's ack."""

    channel: str
    presences: Presences


@dataclass(frozen=True, slots=True)
class PresenceDiff:
    """What changed in the channel's presence: an update keeps its presence_id; a leave has the last state."""

    channel: str
    joins: Presences
    updates: Presences
    leaves: Presences


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message type this client does not know (from a newer server): kept, never fatal."""

    type: str
    message: dict[str, Any] = field(repr=False)


ServerMessage = Ack | Error | Heartbeat | Change | Broadcast | PresenceState | PresenceDiff | Unknown


def parse_server_message(text: str | bytes) -> ServerMessage:
    """Turn one server text frame into a typed message, or raise MalformedMessage."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise MalformedMessage("the frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise MalformedMessage("a server message must be a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise MalformedMessage("a server message needs a string 'type'")
    if kind == "heartbeat":
        return Heartbeat()
    if kind == "ack":
        return Ack(
            channel=_optional_str(message, "channel"),
            ref=_ref(message),
            subscription=_optional_str(message, "subscription"),
            since=_optional_id(message, "since"),
        )
    if kind == "error":
        return Error(
            error=_str(message, "error"),
            code=_optional_str(message, "code"),
            channel=_optional_str(message, "channel"),
            ref=_ref(message),
            subscription=_optional_str(message, "subscription"),
            retry_after=frame_retry_after(message.get("retry_after")),
        )
    if kind == "broadcast":
        channel = _str(message, "channel")
        if channel.startswith(TABLE_PREFIX):
            return _change(message, channel)
        return Broadcast(
            channel=channel,
            event=_str(message, "event"),
            payload=message.get("payload"),
            id=_optional_id(message, "id"),
            subscription=_optional_str(message, "subscription"),
        )
    if kind == "presence_state":
        return PresenceState(_str(message, "channel"), _presences(message, "presences"))
    if kind == "presence_diff":
        return PresenceDiff(
            _str(message, "channel"),
            joins=_presences(message, "joins"),
            updates=_presences(message, "updates"),
            leaves=_presences(message, "leaves"),
        )
    return Unknown(kind, message)


def _change(message: dict[str, Any], channel: str) -> Change:
    payload = message.get("payload")
    if not isinstance(payload, dict):
        raise MalformedMessage("a table broadcast needs a 'payload' object")
    change_id = _optional_id(message, "id")
    if change_id is None:
        raise MalformedMessage("a table broadcast needs an 'id'")
    return Change(
        id=change_id,
        type=_str(payload, "type"),
        schema=_str(payload, "schema"),
        table=_str(payload, "table"),
        record=_optional_record(payload, "record"),
        old_record=_optional_record(payload, "old_record"),
        channel=channel,
        subscription=_optional_str(message, "subscription"),
        partition=_partition(payload),
    )


def _partition(payload: dict[str, Any]) -> tuple[str, str] | None:
    value = payload.get("partition")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedMessage("'partition' must be an object")
    return (_str(value, "schema"), _str(value, "table"))


def _presences(message: dict[str, Any], key: str) -> Presences:
    value = message.get(key, {})
    if not isinstance(value, dict):
        raise MalformedMessage(f"'{key}' must be an object of presence keys")
    presences: Presences = {}
    for presence_key, entries in value.items():
        if not isinstance(entries, list):
            raise MalformedMessage(f"'{key}' must map each presence key to a list of entries")
        parsed = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("presence_id"), str):
                raise MalformedMessage(f"each entry of '{key}' needs a string 'presence_id'")
            parsed.append(PresenceEntry(entry["presence_id"], entry.get("state")))
        presences[presence_key] = tuple(parsed)
    return presences


def _str(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise MalformedMessage(f"'{key}' must be a string")
    return value


def _optional_str(message: dict[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedMessage(f"'{key}' must be a string")
    return value


def _optional_id(message: dict[str, Any], key: str) -> int | None:
    """A change id: an integer, or a string of digits (ids may exceed a JavaScript number)."""
    value = message.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise MalformedMessage(f"'{key}' must be a change id (a non-negative integer)")


def _optional_record(message: dict[str, Any], key: str) -> Record | None:
    value = message.get(key)
    if value is not None and not isinstance(value, dict):
        raise MalformedMessage(f"'{key}' must be an object")
    return value


def _ref(message: dict[str, Any]) -> Ref | None:
    value = message.get("ref")
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise MalformedMessage("'ref' must be a string or an integer")
