"""The WebSocket protocol: client text frames in, typed messages out; typed messages in, frames out.

Pure functions with no I/O, so every rule here is tested without a socket. Server frames are built as
strings once per message; a change's frame is built once and shared by all of its subscribers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import orjson

CHANNEL_PREFIX = "table:"
# PostgreSQL's NAMEDATALEN - 1: longer identifiers cannot name a table.
MAX_IDENTIFIER_BYTES = 63
# A ref is echoed back verbatim, so it must stay small.
MAX_REF_LENGTH = 128
# Change ids are PostgreSQL bigints.
MAX_CHANGE_ID = 2**63 - 1

Ref = str | int
MessageType = Literal["subscribe", "unsubscribe"]
Operation = Literal["INSERT", "UPDATE", "DELETE"]


class ProtocolError(Exception):
    """A client message the server cannot act on; `str(error)` is the sentence sent back."""

    def __init__(self, message: str, ref: Ref | None = None) -> None:
        super().__init__(message)
        self.ref = ref


@dataclass(frozen=True, slots=True)
class TableChannel:
    """`table:{schema}.{table}`: the changes of one table."""

    schema: str
    table: str

    @property
    def name(self) -> str:
        return f"{CHANNEL_PREFIX}{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """A subscribe or unsubscribe from a client."""

    type: MessageType
    channel: TableChannel
    ref: Ref | None = None
    since: int | None = None


@dataclass(frozen=True, slots=True)
class AccessTokenRequest:
    """`{"type":"access_token","token":"..."}`: replaces the connection's token before it expires."""

    token: str = field(repr=False)  # a credential: kept out of reprs, and so out of logs
    ref: Ref | None = None


def parse_channel(value: object) -> TableChannel:
    """Validate a channel name. The schema ends at the first dot; the table name may contain dots."""
    if value is None:
        raise ProtocolError("missing channel: expected a string like 'table:public.products'")
    if not isinstance(value, str):
        raise ProtocolError("channel must be a string like 'table:public.products'")
    if not value.startswith(CHANNEL_PREFIX):
        raise ProtocolError(f"invalid channel {_clip(value)!r}: channels look like 'table:schema.table'")
    schema, dot, table = value[len(CHANNEL_PREFIX) :].partition(".")
    if not dot or not schema or not table:
        raise ProtocolError(f"invalid channel {_clip(value)!r}: channels look like 'table:schema.table'")
    for kind, name in (("schema", schema), ("table", table)):
        if "\x00" in name:
            raise ProtocolError(f"invalid channel: the {kind} name contains a NUL character")
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:
            raise ProtocolError(
                f"invalid channel: the {kind} name is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes"
            )
    return TableChannel(schema, table)


def parse_client_message(text: str) -> ChannelRequest:
    """Turn one client text frame into a request, or raise ProtocolError with a readable reason."""
    return _channel_request(_load_object(text))


def parse_request(text: str) -> ChannelRequest | AccessTokenRequest:
    """Like parse_client_message, and also accepts the in-band token refresh (`access_token`)."""
    message = _load_object(text)
    if message.get("type") == "access_token":
        return _access_token_request(message)
    return _channel_request(message)


def _load_object(text: str) -> dict[str, object]:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("malformed JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def _access_token_request(message: dict[str, object]) -> AccessTokenRequest:
    ref = _parse_ref(message.get("ref"))
    token = message.get("token")
    # The message never quotes the token back: it is a credential.
    if not isinstance(token, str) or not token:
        raise ProtocolError("access_token needs 'token': the new JWT, as a non-empty string", ref)
    return AccessTokenRequest(token, ref)


def _channel_request(message: dict[str, object]) -> ChannelRequest:
    ref = _parse_ref(message.get("ref"))
    kind = message.get("type")
    if kind not in ("subscribe", "unsubscribe"):
        if not isinstance(kind, str):
            raise ProtocolError("missing message type: expected 'subscribe' or 'unsubscribe'", ref)
        raise ProtocolError(f"unknown message type {_clip(kind)!r}", ref)
    try:
        channel = parse_channel(message.get("channel"))
        since = _parse_since(message.get("since")) if kind == "subscribe" else None
    except ProtocolError as error:
        error.ref = ref
        raise
    return ChannelRequest(kind, channel, ref, since)


def _parse_since(value: object) -> int | None:
    """A change id to resume after: an integer, or a string of digits (ids may exceed a JS number)."""
    if value is None:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
    if number is None or not 0 <= number <= MAX_CHANGE_ID:
        raise ProtocolError("since must be a change id: a non-negative integer, or a string of digits")
    return number


def _parse_ref(value: object) -> Ref | None:
    # bool is an int subclass, but `true` as a ref is almost certainly a client bug.
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and len(value) <= MAX_REF_LENGTH:
        return value
    raise ProtocolError(f"ref must be a string of at most {MAX_REF_LENGTH} characters or an integer")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


HEARTBEAT = '{"type":"heartbeat"}'


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def encode_ack(channel: str, ref: Ref | None = None) -> str:
    message: dict[str, object] = {"type": "ack", "channel": channel}
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
    error: str, *, ref: Ref | None = None, channel: str | None = None, code: str | None = None
) -> str:
    message: dict[str, object] = {"type": "error", "error": error}
    if channel is not None:
        message["channel"] = channel
    if code is not None:
        message["code"] = code
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
        return f'{head},"old_record":{old_record}}}}}'
