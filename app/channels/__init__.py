"""Channel kinds: one handler module per kind of channel (`table:`, `broadcast:`), dispatched to by the
connection (app/connection.py). A new kind of channel is a new module here, not a branch in the router."""

from app.channels.kind import ChannelKind, ChannelKinds

__all__ = ["ChannelKind", "ChannelKinds"]
