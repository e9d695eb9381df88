"""What the connection needs of a channel kind, and the registry that finds the kind of a channel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from app import protocol
from app.services.subscribers import Subscriber


class ChannelKind(Protocol):
    """One kind of channel: how a subscriber subscribes to, unsubscribes from and leaves its channels.

    Every method answers the client itself (an `ack` or an `error`, through the hub), so the connection
    only routes. Nothing here may raise for a client's mistake: errors are answers.
    """

    prefix: str

    async def subscribe(self, subscriber: Subscriber, request: protocol.ChannelRequest) -> None: ...

    async def unsubscribe(self, subscriber: Subscriber, request: protocol.ChannelRequest) -> None: ...

    async def handle(self, subscriber: Subscriber, request: protocol.Request) -> None:
        """A message of this kind's own (a broadcast, a track) on one of its channels."""
        ...

    async def principal_changed(self, subscriber: Subscriber, left: list[str]) -> None:
        """The connection took a refreshed token. `left`: this kind's channels on which the subscriber
        left live delivery because its audience changed (no await has happened since)."""
        ...

    def disconnected(self, subscriber: Subscriber) -> None:
        """The socket is gone: let go of whatever the kind holds for the subscriber."""
        ...


class ChannelKinds:
    """The kinds of channel the service serves, by channel-name prefix."""

    def __init__(self, *kinds: ChannelKind) -> None:
        self._kinds = kinds

    def __iter__(self) -> Iterator[ChannelKind]:
        return iter(self._kinds)

    def of(self, channel_name: str) -> ChannelKind:
        for kind in self._kinds:
            if channel_name.startswith(kind.prefix):
                return kind
        raise LookupError(f"no channel kind serves {channel_name!r}")  # parse_channel admits none such
