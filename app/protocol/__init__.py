"""The WebSocket protocol: client text frames in, typed messages out; typed messages in, frames out.

Pure functions with no I/O, so every rule here is tested without a socket. Server frames are built as
strings once per message; a change's frame is built once and shared by all of its subscribers.
`channels` names channels, `requests` parses what clients send, `frames` builds what the server sends.
"""

from app.protocol.channels import (
    BROADCAST_PREFIX,
    CHANNEL_PREFIX,
    MAX_BROADCAST_NAME_BYTES,
    MAX_IDENTIFIER_BYTES,
    TABLE_PREFIX,
    BroadcastChannel,
    Channel,
    TableChannel,
    parse_broadcast_topic,
    parse_channel,
)
from app.protocol.common import MAX_REF_LENGTH, ProtocolError, Ref, check_name
from app.protocol.frames import (
    HEARTBEAT,
    BroadcastEncoder,
    Operation,
    PresenceEntries,
    encode_ack,
    encode_error,
    encode_message,
    encode_presence_diff,
    encode_presence_state,
    encode_reply,
)
from app.protocol.requests import (
    MAX_CHANGE_ID,
    MAX_EVENT_BYTES,
    AccessTokenRequest,
    BroadcastRequest,
    ChannelRequest,
    MessageType,
    PresenceRequest,
    Request,
    TrackRequest,
    UntrackRequest,
    parse_client_message,
    parse_request,
)
from app.protocol.table_options import EVENTS, NO_OPTIONS, TableOptions, parse_table_options

__all__ = [
    "BROADCAST_PREFIX",
    "CHANNEL_PREFIX",
    "EVENTS",
    "HEARTBEAT",
    "MAX_BROADCAST_NAME_BYTES",
    "MAX_CHANGE_ID",
    "MAX_EVENT_BYTES",
    "MAX_IDENTIFIER_BYTES",
    "MAX_REF_LENGTH",
    "NO_OPTIONS",
    "TABLE_PREFIX",
    "AccessTokenRequest",
    "BroadcastChannel",
    "BroadcastEncoder",
    "BroadcastRequest",
    "Channel",
    "ChannelRequest",
    "MessageType",
    "Operation",
    "PresenceEntries",
    "PresenceRequest",
    "ProtocolError",
    "Ref",
    "Request",
    "TableChannel",
    "TableOptions",
    "TrackRequest",
    "UntrackRequest",
    "check_name",
    "encode_ack",
    "encode_error",
    "encode_message",
    "encode_presence_diff",
    "encode_presence_state",
    "encode_reply",
    "parse_broadcast_topic",
    "parse_channel",
    "parse_client_message",
    "parse_request",
    "parse_table_options",
]
