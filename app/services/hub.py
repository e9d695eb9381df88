"""The hub: the one place that knows which connection is subscribed to which channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence

from app import protocol
from app.filters.matching import FilterSet
from app.services.audience import audience_of
from app.services.auth import Principal
from app.services.change_frames import Change
from app.services.pacing import FlushPacer
from app.services.subscribers import Subscriber
from app.services.views import PLAIN, GroupKey, channel_of
from app.wire import text_frame

log = logging.getLogger(__name__)

HEARTBEAT_FRAME = text_frame(protocol.HEARTBEAT)
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_GOING_AWAY = 1001


def frame_type(frame: str) -> str:
    """The `type` of a server frame: every frame starts with it (`{"type":"ack",...`)."""
    if frame.startswith('{"type":"'):
        end = frame.find('"', 9)
        if end > 9:
            return frame[9:end]
    return "other"


class Hub:
    """Channel → group → subscribers, where a group is an audience and a view (app.services.views):
    subscribers that neither row-level security nor their subscription's options tell apart. Publishing
    hands the same frame object to every subscriber of a group (of the whole channel, when every
    subscription is plain and the table has no row-level security).

    A subscriber's subscriptions are keys (app.services.views.subscription_key): the channel's name, or
    the name and the client's subscription id; `subscriber.views` holds the view of each key that is not
    plain. Each channel's row filters are counted by group and indexed (app.filters.matching).
    """

    def __init__(
        self, *, send_queue_size: int, slow_client_timeout: float, broadcast_flush_interval: float = 0.0
    ) -> None:
        self._send_queue_size = send_queue_size
        self._slow_client_timeout = slow_client_timeout
        self._flush_pacer = FlushPacer(broadcast_flush_interval)
        self._channels: dict[str, dict[GroupKey, set[Subscriber]]] = {}
        self._filters: dict[str, FilterSet] = {}
        self._shaped: dict[str, int] = {}  # channel → its groups whose view is not plain
        # channel → filter key (None: no filter) → the channel's groups with that filter
        self._by_filter: dict[str, dict[str | None, set[GroupKey]]] = {}
        self._subscribers: set[Subscriber] = set()
        # While a batch is published: the subscribers holding frames for it (see batch()).
        self._batch: list[Subscriber] | None = None
        # The subscribers holding clients' broadcasts until the next flush (see offer_live()).
        self._turn: list[Subscriber] | None = None
        # Counters for /metrics (app.metrics reads them at scrape time): plain ints, one addition per
        # offer, never per subscriber.
        self.slow_consumer_disconnects = 0
        self.connections_opened = 0
        self.deliveries = 0  # live frames (changes, broadcasts, presence) offered, one per subscriber
        self.delivered_bytes = 0  # their bytes on the wire (uncompressed)
        self.change_deliveries = 0  # the feed's changes among them (broadcast frames of table channels)
        self.sent: Counter[str] = Counter()  # every other frame offered, by its type (ack, error, ...)

    @property
    def connection_count(self) -> int:
        return len(self._subscribers)

    @property
    def send_queue_size(self) -> int:
        return self._send_queue_size

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def channel_names(self) -> list[str]:
        """A snapshot of the channels that have a subscriber."""
        return list(self._channels)

    def subscribers(self) -> list[Subscriber]:
        """A snapshot of the open connections."""
        return list(self._subscribers)

    def connect(self, principal: Principal, client: str = "") -> Subscriber:
        subscriber = Subscriber(principal, self._send_queue_size, client)
        self._subscribers.add(subscriber)
        self.connections_opened += 1
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        """The socket is gone: forget the subscriber, and close it so that nothing waits on it any more."""
        subscriber.close(CLOSE_GOING_AWAY, "disconnected", drop_pending=True)
        self._leave_all(subscriber)
        self._subscribers.discard(subscriber)

    def change_principal(self, subscriber: Subscriber, principal: Principal) -> list[str]:
        """Give the subscriber a refreshed token's principal. It leaves live delivery on every channel
        whose audience changes (returned): the caller rejoins them, so that nothing authorized for the old
        audience but not yet published is lost or sent twice."""
        subscriber.principal = principal
        audience = audience_of(principal)
        if audience == subscriber.audience:
            return []
        left = [channel for channel in subscriber.channels if self.is_live(subscriber, channel)]
        for channel in left:
            self._leave(subscriber, channel)
        subscriber.audience = audience
        return left

    def subscribe(self, subscriber: Subscriber, key: str) -> None:
        """Live delivery for one of the subscriber's subscriptions, through its view."""
        if subscriber in self._subscribers:
            channel = channel_of(key)
            groups = self._channels.setdefault(channel, {})
            view = subscriber.views.get(key, PLAIN)
            group = (subscriber.audience, view)
            members = groups.get(group)
            if members is None:
                members = groups[group] = set()
                self._by_filter.setdefault(channel, {}).setdefault(view.filter_key, set()).add(group)
                if not view.plain:
                    self._shaped[channel] = self._shaped.get(channel, 0) + 1
                if view.filter is not None:
                    self._filters.setdefault(channel, FilterSet()).add(view.filter)
            members.add(subscriber)
            subscriber.channels.add(key)

    def groups_by_filter(self, channel: str) -> Mapping[str | None, Collection[GroupKey]]:
        """The channel's groups by their row filter's key (None: no filter). Not a copy."""
        return self._by_filter.get(channel, {})

    def filters(self, channel: str) -> FilterSet | None:
        """The row filters of the channel's live groups."""
        return self._filters.get(channel)

    def shaped(self, channel: str) -> bool:
        """Whether some live subscription of the channel is not plain (a filter, events, columns, an id)."""
        return channel in self._shaped

    def unsubscribe(self, subscriber: Subscriber, key: str) -> bool:
        """False when the subscriber had no such subscription."""
        if key not in subscriber.channels:
            return False
        subscriber.channels.discard(key)
        self._leave(subscriber, key)
        subscriber.views.pop(key, None)
        return True

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Publish several changes as one batch: each direct-path subscriber gets all of its frames in one
        socket write at the end (one system call and, usually, one TCP segment, instead of one per change).

        The feed publishes whatever it read in one pass; under load passes find more changes each, so
        the cost per delivery falls as the rate rises. Nothing awaits inside a batch.
        """
        if self._batch is not None:
            yield
            return
        held: list[Subscriber] = []
        self._batch = held
        try:
            yield
        finally:
            self._batch = None
            for subscriber in held:
                subscriber.flush()

    def offer_live(self, subscribers: Collection[Subscriber], frame: str) -> None:
        """A client's broadcast (sent here or on another instance) for each subscriber, held with the
        other broadcasts until the next flush: one socket write per subscriber per flush however many
        broadcasts it carries, as batch() does for the feed. The frame's bytes are built once.

        A flush runs at the end of the loop turn (a broadcast waits for no later one), or, under
        sustained traffic, at most every `broadcast_flush_interval` (app.services.pacing.FlushPacer).
        """
        self.sent[frame_type(frame)] += len(subscribers)
        held = self._batch
        if held is None:
            held = self._turn
            if held is None:
                held = self._turn = []
                loop = asyncio.get_running_loop()
                delay = self._flush_pacer.delay(loop.time())
                if delay > 0:
                    loop.call_later(delay, self._flush_live)
                else:
                    loop.call_soon(self._flush_live)
        self._offer(subscribers, frame, text_frame(frame), held)

    def _flush_live(self) -> None:
        held, self._turn = self._turn, None
        self._flush_pacer.flushed(asyncio.get_running_loop().time())
        for subscriber in held or ():
            subscriber.flush()

    def publish(self, channel: str, frame: str) -> None:
        """The same frame to every plain subscription of the channel."""
        groups = self._channels.get(channel)
        if not groups:
            return
        wire = text_frame(frame)  # built once, written as is to every direct-path socket
        # Snapshots: a subscriber closed as too slow leaves its group, which may empty and disappear.
        for (_, view), subscribers in list(groups.items()):
            if view is PLAIN or view.plain:
                self.change_deliveries += len(subscribers)
                self._offer(subscribers, frame, wire)

    def publish_per_group(self, channel: str, frames: Mapping[GroupKey, str | None]) -> None:
        """Each group gets its own frame (None, or absent: this change is not for it). Only the groups
        named are visited: a change for one of 10,000 filtered groups costs one."""
        groups = self._channels.get(channel)
        if not groups:
            return
        # Groups that see a change alike share one frame object: build its bytes once.
        wires: dict[int, bytes] = {}
        for group, frame in frames.items():
            subscribers = groups.get(group)
            if frame is not None and subscribers:
                wire = wires.get(id(frame))
                if wire is None:
                    wire = wires[id(frame)] = text_frame(frame)
                self.change_deliveries += len(subscribers)
                self._offer(subscribers, frame, wire)

    def is_live(self, subscriber: Subscriber, key: str) -> bool:
        """Whether the subscription receives the channel's changes as they are published."""
        group = (subscriber.audience, subscriber.views.get(key, PLAIN))
        return subscriber in self._channels.get(channel_of(key), {}).get(group, ())

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._channels

    async def wait_for_room(
        self, changes: Sequence[Change], per_group: Mapping[int, Mapping[GroupKey, str | None]]
    ) -> None:
        """Wait, at most the slow-client timeout, until every queue that the changes are for can take
        as many frames as there are changes: every subscriber of a change's channel, or, where
        `per_group` gives a change's frames by group, the subscribers of the groups it has a frame for
        (so that 10,000 filtered subscribers cost nothing here when a change is for one of them).

        A burst larger than a queue (a bulk UPDATE) then slows delivery to the pace of the slowest reader
        instead of disconnecting readers that are merely slower than the database. A reader still full
        when the timeout ends is closed as too slow by the publish that follows.
        """
        needed = min(len(changes), self._send_queue_size)
        channels = {c.channel for c in changes if c.id not in per_group}
        groups = {
            (c.channel, group)
            for c in changes
            if c.id in per_group
            for group, frame in per_group[c.id].items()
            if frame is not None
        }
        deadline = time.monotonic() + self._slow_client_timeout
        # Polling, and only while some queue is full: an event would cost every writer a call per frame.
        while self._some_queue_lacks(needed, channels, groups) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    def _some_queue_lacks(
        self, room: int, channels: Collection[str], groups: Collection[tuple[str, GroupKey]]
    ) -> bool:
        if any(
            s.room < room
            for channel in channels
            for subscribers in self._channels.get(channel, {}).values()
            for s in subscribers
        ):
            return True
        return any(
            s.room < room for channel, group in groups for s in self._channels.get(channel, {}).get(group, ())
        )

    async def run_heartbeats(self, interval: float) -> None:
        """Send a heartbeat to every connection every `interval` seconds, whatever the client does."""
        while True:
            await asyncio.sleep(interval)
            self.offer_to(list(self._subscribers), protocol.HEARTBEAT, HEARTBEAT_FRAME)

    def close_all(self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        for subscriber in self._subscribers:
            subscriber.close(code, reason, drop_pending=True)

    def offer_to(self, subscribers: Collection[Subscriber], frame: str, wire: bytes | None = None) -> None:
        """Queue a frame for each subscriber; one whose queue is full is closed as too slow.

        `wire` (the frame's bytes, built once) marks a live frame that may take the direct path. Frames
        are counted by type here; the feed's changes, the bulk of them, are counted by `publish` without
        looking at the frame.
        """
        self.sent[frame_type(frame)] += len(subscribers)
        self._offer(subscribers, frame, wire)

    def reply(self, subscriber: Subscriber, frame: str) -> None:
        """An answer for one subscriber (an ack): written at once when nothing is queued or being sent
        before it, so that a connect storm's acks do not each start a writer task."""
        self.sent[frame_type(frame)] += 1
        if not subscriber.offer(frame, text_frame(frame)) and not subscriber.closing:
            self._too_slow(subscriber)

    def _offer(
        self,
        subscribers: Collection[Subscriber],
        frame: str,
        wire: bytes | None,
        held: list[Subscriber] | None = None,
    ) -> None:
        if wire is not None:
            batch = self._batch if held is None else held
            self.deliveries += len(subscribers)
            self.delivered_bytes += len(subscribers) * len(wire)
        else:
            batch = None
        too_slow = [s for s in subscribers if not s.offer(frame, wire, batch) and not s.closing]
        for subscriber in too_slow:
            self._too_slow(subscriber)

    def _too_slow(self, subscriber: Subscriber) -> None:
        self.slow_consumer_disconnects += 1
        log.warning("slow_consumer_closed client=%s channels=%d", subscriber.client, len(subscriber.channels))
        subscriber.close(CLOSE_TRY_AGAIN_LATER, "client is not reading fast enough", drop_pending=True)
        # It stays a connection until its socket closes; it just stops receiving changes.
        self._leave_all(subscriber)

    def subscriptions_by_kind(self) -> dict[str, tuple[int, int]]:
        """Channel kind (`table`, `broadcast`) → (channels with a live subscriber, live subscriptions)."""
        counts: dict[str, tuple[int, int]] = {}
        for channel, groups in self._channels.items():
            kind = channel.partition(":")[0]
            channels, subscriptions = counts.get(kind, (0, 0))
            counts[kind] = (channels + 1, subscriptions + sum(len(members) for members in groups.values()))
        return counts

    def subscription_count(self, channel: str) -> int:
        """Live subscriptions of one channel (a connection with two subscriptions of it counts twice)."""
        groups = self._channels.get(channel)
        return sum(len(members) for members in groups.values()) if groups else 0

    def queued_frames(self) -> tuple[int, int]:
        """Frames waiting in send queues: in all of them, and in the fullest one."""
        depths = [subscriber.queued for subscriber in self._subscribers]
        return sum(depths), max(depths, default=0)

    def _leave_all(self, subscriber: Subscriber) -> None:
        for key in subscriber.channels:
            self._leave(subscriber, key)
        subscriber.channels.clear()
        subscriber.views.clear()

    def _leave(self, subscriber: Subscriber, key: str) -> None:
        channel = channel_of(key)
        groups = self._channels.get(channel)
        if groups is None:
            return
        view = subscriber.views.get(key, PLAIN)
        group = (subscriber.audience, view)
        members = groups.get(group)
        if members is None or subscriber not in members:
            return
        members.discard(subscriber)
        if members:
            return
        del groups[group]
        if not groups:
            del self._channels[channel]
        by_filter = self._by_filter[channel]
        by_filter[view.filter_key].discard(group)
        if not by_filter[view.filter_key]:
            del by_filter[view.filter_key]
            if not by_filter:
                del self._by_filter[channel]
        if not view.plain:
            self._shaped[channel] -= 1
            if not self._shaped[channel]:
                del self._shaped[channel]
        if view.filter is not None:
            filters = self._filters[channel]
            filters.discard(view.filter.key)
            if not len(filters):
                del self._filters[channel]
