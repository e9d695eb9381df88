"""The hub: the one place that knows which connection is subscribed to which channel."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Iterable

from app import protocol
from app.services.auth import Principal
from app.services.subscribers import Subscriber

log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_GOING_AWAY = 1001


class Hub:
    """Channel → subscribers. Publishing hands the same frame object to every subscriber's queue."""

    def __init__(self, *, send_queue_size: int, slow_client_timeout: float) -> None:
        self._send_queue_size = send_queue_size
        self._slow_client_timeout = slow_client_timeout
        self._channels: dict[str, set[Subscriber]] = {}
        self._subscribers: set[Subscriber] = set()
        self.slow_consumer_disconnects = 0

    @property
    def connection_count(self) -> int:
        return len(self._subscribers)

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def subscribers(self) -> list[Subscriber]:
        """A snapshot of the open connections."""
        return list(self._subscribers)

    def connect(self, principal: Principal, client: str = "") -> Subscriber:
        subscriber = Subscriber(principal, self._send_queue_size, client)
        self._subscribers.add(subscriber)
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        self._leave_all(subscriber)
        self._subscribers.discard(subscriber)

    def change_principal(self, subscriber: Subscriber, principal: Principal) -> None:
        """A refreshed token: later changes are authorized with the new principal's role and claims."""
        subscriber.principal = principal

    def subscribe(self, subscriber: Subscriber, channel: str) -> None:
        if subscriber in self._subscribers:
            self._channels.setdefault(channel, set()).add(subscriber)
            subscriber.channels.add(channel)

    def unsubscribe(self, subscriber: Subscriber, channel: str) -> bool:
        """False when the subscriber was not subscribed to the channel."""
        if channel not in subscriber.channels:
            return False
        subscriber.channels.discard(channel)
        self._leave(subscriber, channel)
        return True

    def publish(self, channel: str, frame: str) -> None:
        subscribers = self._channels.get(channel)
        if subscribers:
            self.offer_to(subscribers, frame)

    def is_live(self, subscriber: Subscriber, channel: str) -> bool:
        """Whether the subscriber receives the channel's changes as they are published."""
        return subscriber in self._channels.get(channel, ())

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._channels

    async def wait_for_room(self, frames: int, channels: Collection[str]) -> None:
        """Wait, at most the slow-client timeout, until every queue subscribed to `channels` can take
        `frames` more.

        A burst larger than a queue (a bulk UPDATE) then slows delivery to the pace of the slowest reader
        instead of disconnecting readers that are merely slower than the database. A reader still full
        when the timeout ends is closed as too slow by the publish that follows.
        """
        needed = min(frames, self._send_queue_size)
        deadline = time.monotonic() + self._slow_client_timeout
        # Polling, and only while some queue is full: an event would cost every writer a call per frame.
        while self._some_queue_lacks(needed, channels) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    def _some_queue_lacks(self, room: int, channels: Collection[str]) -> bool:
        return any(s.room < room for channel in channels for s in self._channels.get(channel, ()))

    async def run_heartbeats(self, interval: float) -> None:
        """Send a heartbeat to every connection every `interval` seconds, whatever the client does."""
        while True:
            await asyncio.sleep(interval)
            self.offer_to(list(self._subscribers), protocol.HEARTBEAT)

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        for subscriber in self._subscribers:
            subscriber.close(code, reason, drop_pending=True)

    def offer_to(self, subscribers: Iterable[Subscriber], frame: str) -> None:
        """Queue a frame for each subscriber; one whose queue is full is closed as too slow."""
        too_slow = [s for s in subscribers if not s.offer(frame) and not s.closing]
        for subscriber in too_slow:
            self.slow_consumer_disconnects += 1
            log.warning(
                "slow_consumer_closed client=%s channels=%d", subscriber.client, len(subscriber.channels)
            )
            subscriber.close(CLOSE_TRY_AGAIN_LATER, "client is not reading fast enough", drop_pending=True)
            # It stays a connection until its socket closes; it just stops receiving changes.
            self._leave_all(subscriber)

    def _leave_all(self, subscriber: Subscriber) -> None:
        for channel in subscriber.channels:
            self._leave(subscriber, channel)
        subscriber.channels.clear()

    def _leave(self, subscriber: Subscriber, channel: str) -> None:
        members = self._channels.get(channel)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del self._channels[channel]
