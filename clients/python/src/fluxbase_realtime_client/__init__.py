"""Python client of fluxbase-realtime: PostgreSQL row changes, broadcast and presence over one WebSocket,
resumed after every disconnect so that the application sees each change exactly once, in order."""

from fluxbase_realtime_client.backoff import Backoff
from fluxbase_realtime_client.client import RealtimeClient, Status
from fluxbase_realtime_client.errors import (
    ClientClosed,
    ConnectionLost,
    RealtimeError,
    ServerError,
    SubscriptionError,
    TokenExpiredError,
)
from fluxbase_realtime_client.messages import (
    Ack,
    Broadcast,
    Change,
    Error,
    Heartbeat,
    MalformedMessage,
    PresenceDiff,
    PresenceEntry,
    PresenceState,
    ServerMessage,
    Unknown,
    parse_server_message,
)
from fluxbase_realtime_client.streams import BroadcastChannel, ChangeStream, Reset

__all__ = [
    "Ack",
    "Backoff",
    "Broadcast",
    "BroadcastChannel",
    "Change",
    "ChangeStream",
    "ClientClosed",
    "ConnectionLost",
    "Error",
    "Heartbeat",
    "MalformedMessage",
    "PresenceDiff",
    "PresenceEntry",
    "PresenceState",
    "RealtimeClient",
    "RealtimeError",
    "Reset",
    "ServerError",
    "ServerMessage",
    "Status",
    "SubscriptionError",
    "TokenExpiredError",
    "Unknown",
    "parse_server_message",
]
