"""Client text frames in, typed requests out: every rule a client message must satisfy, without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import orjson

from app.protocol.channels import BroadcastChannel, Channel, TableChannel, parse_channel
from app.protocol.common import ProtocolError, Ref, check_name, clip, parse_ref
from app.protocol.table_options import NO_OPTIONS, TableOptions, parse_table_options

# Change ids are PostgreSQL bigints.
MAX_CHANGE_ID = 2**63 - 1
MAX_EVENT_BYTES = 200

MessageType = Literal["subscribe", "unsubscribe"]
_CHANNEL_TYPES = ("subscribe", "unsubscribe")
_BROADCAST_TYPES = ("broadcast", "track", "untrack")


@dataclass(frozen=True, slots=True)
class ChannelRequest:
    """A subscribe or unsubscribe from a client. `receive_own` is a broadcast channel's `self` option;
    `options` a table channel's filter, events, columns and subscription id."""

    type: MessageType
    channel: Channel
    ref: Ref | None = None
    since: int | None = None
    receive_own: bool = False
    options: TableOptions = NO_OPTIONS


@dataclass(frozen=True, slots=True)
class AccessTokenRequest:
    """`{"type":"access_token","token":"..."}`: replaces the connection's token before it expires."""

    token: str = field(repr=False)  # a credential: kept out of reprs, and so out of logs
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class BroadcastRequest:
    """A client's message to everyone subscribed to a broadcast channel. `payload` is its JSON text."""

    channel: BroadcastChannel
    event: str
    payload: str = field(repr=False)  # content is never logged
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class TrackRequest:
    """Join (or update) the connection's presence on a broadcast channel. `state` is its JSON text."""

    channel: BroadcastChannel
    state: str = field(repr=False)
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class UntrackRequest:
    channel: BroadcastChannel
    ref: Ref | None = None


PresenceRequest = TrackRequest | UntrackRequest
Request = ChannelRequest | AccessTokenRequest | BroadcastRequest | TrackRequest | UntrackRequest


def parse_client_message(text: str) -> ChannelRequest:
    """Turn one client text frame into a subscribe or unsubscribe, or raise ProtocolError."""
    return _channel_request(_load_object(text))


def parse_request(text: str) -> Request:
    """Any client message: subscribe/unsubscribe, access_token, broadcast, track, untrack."""
    message = _load_object(text)
    kind = message.get("type")
    if kind == "access_token":
        return _access_token_request(message)
    if kind in _BROADCAST_TYPES:
        return _broadcast_request(message)
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
    ref = parse_ref(message.get("ref"))
    token = message.get("token")
    # The message never quotes the token back: it is a credential.
    if not isinstance(token, str) or not token:
        raise ProtocolError("access_token needs 'token': the new JWT, as a non-empty string", ref)
    return AccessTokenRequest(token, ref)


def _channel_request(message: dict[str, object]) -> ChannelRequest:
    ref = parse_ref(message.get("ref"))
    kind = message.get("type")
    if kind not in _CHANNEL_TYPES:
        if not isinstance(kind, str):
            raise ProtocolError("missing message type: expected 'subscribe' or 'unsubscribe'", ref)
        raise ProtocolError(f"unknown message type {clip(kind)!r}", ref)
    try:
        channel = parse_channel(message.get("channel"))
        since = _parse_since(message.get("since")) if kind == "subscribe" else None
        # An option of broadcast channels; like any field a kind does not know, other kinds ignore it.
        receive_own = message.get("self") if isinstance(channel, BroadcastChannel) else None
        if receive_own is None:
            receive_own = False
        elif not isinstance(receive_own, bool):
            raise ProtocolError("self must be true or false")
        # A table channel's options; like any field a kind does not know, other kinds ignore them.
        options = NO_OPTIONS
        if isinstance(channel, TableChannel):
            options = parse_table_options(message, subscribe=kind == "subscribe")
    except ProtocolError as error:
        error.ref = ref
        raise
    return ChannelRequest(kind, channel, ref, since, receive_own, options)  # type: ignore[arg-type]


def _broadcast_request(message: dict[str, object]) -> BroadcastRequest | TrackRequest | UntrackRequest:
    ref = parse_ref(message.get("ref"))
    kind = message["type"]
    try:
        channel = parse_channel(message.get("channel"))
        if not isinstance(channel, BroadcastChannel):
            raise ProtocolError(f"{kind} needs a broadcast channel ('broadcast:name'), not {channel.name!r}")
        if kind == "untrack":
            return UntrackRequest(channel, ref)
        if kind == "track":
            state = message.get("state", {})
            if not isinstance(state, dict):
                raise ProtocolError("track needs 'state': a JSON object")
            return TrackRequest(channel, _json(state), ref)
        event = message.get("event")
        if not isinstance(event, str):
            raise ProtocolError("broadcast needs 'event': a string naming the kind of message")
        check_name(event, "event", MAX_EVENT_BYTES)
        return BroadcastRequest(channel, event, _json(message.get("payload")), ref)
    except ProtocolError as error:
        error.ref = ref
        raise


def _json(value: object) -> str:
    # Parsed by orjson, so it serializes again, except past orjson's nesting limit for writing (254).
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise ProtocolError("the message is nested too deeply") from None


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
