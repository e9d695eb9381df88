"""Subscriptions as the application sees them: async iterators of typed events that survive reconnects.

A stream belongs to one client and lives across that client's connections: the client subscribes it
again after every reconnect, from its resume point, and it drops what it has already delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from fluxbase_realtime_client.buffer import EventBuffer
from fluxbase_realtime_client.errors import ClientClosed, ConnectionLost, SubscriptionError
from fluxbase_realtime_client.messages import (
    Ack,
    Broadcast,
    Change,
    Error,
    PresenceDiff,
    PresenceEntry,
    PresenceState,
    Ref,
)
from fluxbase_realtime_client.presence import Presence
from fluxbase_realtime_client.requests import (
    SubscribeOptions,
    encode_broadcast,
    encode_subscribe,
    encode_track,
    encode_untrack,
)
from fluxbase_realtime_client.resume import ResumePoint

StreamKey = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Reset:
    """Reload the data, then apply the changes that follow: the server could not replay everything since
    the resume point (`replay_gap`), or a TRUNCATE emptied one partition of the table (the Change before
    this says which; rows cannot tell which partition held them)."""

    channel: str
    subscription: str | None
    reason: str


class Link(Protocol):
    """What a stream needs of its client."""

    async def request(self, build: Callable[[Ref], str]) -> Ack: ...
    def detach(self, stream: Stream[Any]) -> None: ...
    def connected_and_acked(self, stream: Stream[Any]) -> bool: ...


T = TypeVar("T")


class Stream(Generic[T]):
    """A subscription: iterate it for its events; `close()` (or leaving `async with`) unsubscribes."""

    def __init__(
        self, link: Link, channel: str, options: SubscribeOptions, since: int | None, buffer_size: int
    ) -> None:
        self._link = link
        self.channel = channel
        self.options = options
        self.point = ResumePoint(since)
        self.buffer: EventBuffer[T] = EventBuffer(buffer_size)
        self.ever_acked = False
        self.acked = False  # on the current connection
        self.subscribed_by: object = None  # the session that last sent this stream's subscribe
        self.retrying = False  # a subscribe is scheduled again
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def key(self) -> StreamKey:
        return (self.channel, self.options.subscription)

    @property
    def subscription(self) -> str | None:
        return self.options.subscription

    def subscribe_frame(self, ref: Ref) -> str:
        return encode_subscribe(self.channel, self.options, since=self.point.since, ref=ref)

    def on_ack(self, ack: Ack) -> None:
        self.point.acked(ack.since)
        self.acked = self.ever_acked = True
        if not self._ready.done():
            self._ready.set_result(None)

    def on_disconnect(self) -> None:
        self.acked = False

    def fail(self, error: BaseException) -> None:
        """The stream ends: buffered events are still handed out, then `error` is raised."""
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved: nobody may be waiting for it
        self.buffer.end(error)

    async def subscribed(self) -> None:
        """Wait for the server's first ack (raises SubscriptionError when the subscribe is refused)."""
        await asyncio.shield(self._ready)

    def end(self) -> None:
        """Iteration ends once what is buffered has been handed out; `subscribed()` raises ClientClosed."""
        if not self._ready.done():
            self._ready.set_exception(ClientClosed("the stream was closed before the server acked it"))
            self._ready.exception()  # retrieved: nobody may be waiting for it
        self.buffer.end()

    async def close(self) -> None:
        """Unsubscribe; iteration ends once what is buffered has been handed out."""
        self._link.detach(self)
        self.end()

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        return await self.buffer.get()

    async def __aenter__(self) -> Stream[T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def on_gap(self, error: Error) -> None:
        raise NotImplementedError

    def _reset(self, error: Error) -> Reset:
        self.point.gap()
        return Reset(self.channel, self.subscription, error.error)

    def refused(self, error: Error) -> SubscriptionError:
        return SubscriptionError(error)


class ChangeStream(Stream[Change | Reset]):
    """A table channel: yields each Change once, in id order, across reconnects; Reset after a gap."""

    async def on_change(self, change: Change) -> None:
        if self.point.accept(change.id):
            await self.buffer.put(change)
            if change.type == "TRUNCATE" and change.partition is not None:
                schema, table = change.partition
                await self.buffer.put(
                    Reset(self.channel, self.subscription, f"partition {schema}.{table} was truncated")
                )

    async def on_gap(self, error: Error) -> None:
        await self.buffer.put(self._reset(error))


class BroadcastChannel(Stream[Broadcast | PresenceState | PresenceDiff | Reset]):
    """A `broadcast:` channel: yields broadcasts and presence messages; keeps the presence state; sends,
    tracks and untracks. A tracked state is tracked again after every reconnect."""

    def __init__(
        self, link: Link, channel: str, options: SubscribeOptions, since: int | None, buffer_size: int
    ) -> None:
        super().__init__(link, channel, options, since, buffer_size)
        self.presence = Presence()
        self.tracked: Any = None
        self.tracking = False

    async def on_broadcast(self, message: Broadcast) -> None:
        # Only database-sent messages carry an id: they are the ones `since` replays, so dedupe those.
        if message.id is not None and not self.point.accept(message.id):
            return
        await self.buffer.put(message)

    async def on_gap(self, error: Error) -> None:
        await self.buffer.put(self._reset(error))

    async def on_presence(self, message: PresenceState | PresenceDiff) -> None:
        self.presence.apply(message)
        await self.buffer.put(message)

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self.presence.reset()  # the next subscribe's presence_state replaces it

    def presence_state(self) -> dict[str, list[PresenceEntry]]:
        return self.presence.state()

    async def send(self, event: str, payload: Any, *, ack: bool = True) -> None:
        """Broadcast to the channel's subscribers. With `ack`, waits until the server accepted it for
        delivery (raises ServerError on refusal, ConnectionLost if the connection closed first)."""
        await self.subscribed()
        if not self._link.connected_and_acked(self):
            raise ConnectionLost("not connected: the broadcast was not sent")
        await self._link.request(lambda ref: encode_broadcast(self.channel, event, payload, ref=ref))

    async def track(self, state: Any) -> None:
        """Join the channel's presence with `state` (again: update it). Kept and re-sent after reconnects."""
        self.tracked, self.tracking = state, True
        await self._presence_request(lambda ref: encode_track(self.channel, state, ref=ref))

    async def untrack(self) -> None:
        self.tracked, self.tracking = None, False
        await self._presence_request(lambda ref: encode_untrack(self.channel, ref=ref))

    def track_frame(self, ref: Ref) -> str:
        return encode_track(self.channel, self.tracked, ref=ref)

    async def _presence_request(self, build: Callable[[Ref], str]) -> None:
        await self.subscribed()
        if not self._link.connected_and_acked(self):
            return  # sent with the next subscribe
        try:
            await self._link.request(build)
        except ConnectionLost:
            pass  # re-sent after the reconnect
