"""`broadcast:{name}` channels: messages between clients (and from the database and backends), and
presence, on this instance and, through the cluster, on every other one on the database.

A subscriber is a *member* of the channel from its subscribe on: it receives clients' broadcasts and
presence at once. Messages sent from the database reach it through the change feed like table changes
(with ids; `since` replays them), so for those it joins the hub as a table subscriber does.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from app import protocol
from app.channels.presence import PresenceRooms
from app.channels.replays import start_replay, stop_replay
from app.config import Settings
from app.protocol import BroadcastChannel
from app.services.bus import BusUnavailable
from app.services.changes import ChangeFeed
from app.services.channel_access import ChannelAccess
from app.services.cluster import Cluster
from app.services.hub import Hub
from app.services.limits import MessageRate
from app.services.replay import Replayer
from app.services.subscribers import Subscriber

log = logging.getLogger(__name__)

_VERBS: dict[type, str] = {
    protocol.BroadcastRequest: "broadcast",
    protocol.TrackRequest: "track",
    protocol.UntrackRequest: "untrack",
}


@dataclass(slots=True)
class Membership:
    """One subscriber on one broadcast channel."""

    receive_own: bool
    can_write: bool
    presence_id: str | None = None
    presence_rate: MessageRate | None = None


class BroadcastChannels:
    """The broadcast channel kind (app.channels.kind.ChannelKind)."""

    prefix = protocol.BROADCAST_PREFIX

    def __init__(
        self, hub: Hub, feed: ChangeFeed, replayer: Replayer, access: ChannelAccess, settings: Settings
    ) -> None:
        self._hub = hub
        self._feed = feed
        self._replayer = replayer
        self._access = access
        self._settings = settings
        self._members: dict[str, dict[Subscriber, Membership]] = {}
        self._joined: dict[Subscriber, set[str]] = {}
        self.presence: PresenceRooms | None = None
        self.cluster: Cluster | None = None
        self.sent = 0

    def attach(self, presence: PresenceRooms, cluster: Cluster) -> None:
        self.presence = presence
        self.cluster = cluster

    def members(self, channel: str) -> Collection[Subscriber]:
        return self._members.get(channel, {}).keys()

    # ChannelKind

    async def subscribe(self, subscriber: Subscriber, request: protocol.ChannelRequest) -> None:
        channel = request.channel
        assert isinstance(channel, BroadcastChannel) and self.presence is not None
        name = channel.name
        try:
            permissions = await self._access.permissions(subscriber.audience, channel)
        except Exception:
            log.exception("channel_access_failed")
            self._reply(
                subscriber,
                protocol.encode_error(
                    "could not check the channel's policies: the database is unavailable, try again",
                    ref=request.ref,
                    channel=name,
                    code="subscribe_failed",
                ),
            )
            return
        if not permissions.read:
            reason = f"no policy lets this connection subscribe to {name}"
            self._reply(subscriber, _forbidden(reason, request))
            return
        if subscriber.closing:
            return
        state = self.presence.state_frame(name)
        membership = self._members.setdefault(name, {}).get(subscriber)
        if membership is None:
            self._members[name][subscriber] = Membership(request.receive_own, permissions.write)
            self._joined.setdefault(subscriber, set()).add(name)
        else:
            membership.receive_own, membership.can_write = request.receive_own, permissions.write
        subscriber.channels.add(name)
        # Messages from the database: from `since`, or from the feed's position now (told in the ack, so
        # that a client cut off before its first message resumes from there), with no await between.
        joining = request.since is None and name not in subscriber.replays
        joining = joining and not self._hub.is_live(subscriber, name)
        since = self._feed.last_id if joining else None
        self._reply(subscriber, protocol.encode_ack(name, request.ref, since=since))
        self._reply(subscriber, state)
        if request.since is not None:
            stop_replay(subscriber, name)
            self._hub.unsubscribe(subscriber, name)
            subscriber.channels.add(name)
            replay = self._replayer.replay(subscriber, channel, request.since)
            start_replay(subscriber, name, replay, self._abandon)
        elif joining:
            self._hub.subscribe(subscriber, name)

    async def unsubscribe(self, subscriber: Subscriber, request: protocol.ChannelRequest) -> None:
        name = request.channel.name
        if not self._leave(subscriber, name):
            self._reply(
                subscriber, protocol.encode_error(f"not subscribed to {name}", ref=request.ref, channel=name)
            )
            return
        self._reply(subscriber, protocol.encode_ack(name, request.ref))

    async def handle(self, subscriber: Subscriber, request: protocol.Request) -> None:
        assert isinstance(request, protocol.BroadcastRequest | protocol.PresenceRequest)
        name = request.channel.name
        membership = self._members.get(name, {}).get(subscriber)
        if membership is None:
            verb = _VERBS[type(request)]
            reason = f"subscribe to {name} before you {verb} on it"
            self._reply(subscriber, _error(reason, request, "not_subscribed"))
            return
        if isinstance(request, protocol.UntrackRequest):
            self._untrack(name, membership)
            self._reply(subscriber, protocol.encode_ack(name, request.ref))
            return
        if not membership.can_write:
            self._reply(subscriber, _forbidden(f"no policy lets this connection write to {name}", request))
            return
        if isinstance(request, protocol.TrackRequest):
            self._track(subscriber, request, membership)
        else:
            await self._send(subscriber, request, membership)

    async def principal_changed(self, subscriber: Subscriber, left: list[str]) -> None:
        """Rejoin at once what the hub let go (nothing awaits before), then ask the policies again: a
        channel no longer readable is left, with an error; one no longer writable is untracked."""
        for name in left:
            self._hub.subscribe(subscriber, name)
        for name in sorted(self._joined.get(subscriber, ())):
            channel = protocol.parse_broadcast_topic(name[len(self.prefix) :])
            try:
                permissions = await self._access.permissions(subscriber.audience, channel)
            except Exception:
                log.exception("channel_access_failed")
                continue  # the database is down: keep what was allowed; the next refresh asks again
            membership = self._members.get(name, {}).get(subscriber)
            if membership is None:
                continue  # unsubscribed meanwhile
            if not permissions.read:
                self._leave(subscriber, name)
                self._reply(
                    subscriber,
                    protocol.encode_error(
                        f"access to {name} was lost with the new token: unsubscribed",
                        channel=name,
                        code="forbidden",
                    ),
                )
            elif not permissions.write:
                membership.can_write = False
                self._untrack(name, membership)
            else:
                membership.can_write = True

    def disconnected(self, subscriber: Subscriber) -> None:
        for name in list(self._joined.get(subscriber, ())):
            self._leave(subscriber, name)

    # From other instances

    def deliver_remote(self, channel: str, frame: str) -> None:
        """A client's broadcast sent on another instance: for every member here."""
        members = self._members.get(channel)
        if members:
            self._hub.offer_live(list(members), frame)

    # Helpers

    async def _send(
        self, subscriber: Subscriber, request: protocol.BroadcastRequest, membership: Membership
    ) -> None:
        name = request.channel.name
        limit = self._settings.realtime_max_broadcast_payload_bytes
        if len(request.payload) > limit // 4 and len(request.payload.encode()) > limit:
            reason = f"payload is larger than {limit} bytes"
            self._reply(subscriber, _error(reason, request, "payload_too_large"))
            return
        frame = protocol.encode_message(name, request.event, request.payload)
        # Every member but the sender, unless it asked for its own (`self`): a copy made in C, not a
        # comprehension that asks each of a thousand members.
        targets = list(self._members[name])
        if not membership.receive_own:
            targets.remove(subscriber)
        if targets:
            self._hub.offer_live(targets, frame)
        self.sent += 1
        assert self.cluster is not None
        handed = self.cluster.broadcast(name, frame, wait=request.ref is not None)
        if request.ref is None:
            return  # the cheap path: nothing to answer
        if handed is not None:
            try:
                await handed
            except BusUnavailable as error:
                self._reply(
                    subscriber,
                    _error(f"sent to this instance's subscribers only: {error}", request, "bus_unavailable"),
                )
                return
        self._reply(subscriber, protocol.encode_ack(name, request.ref))

    def _track(self, subscriber: Subscriber, request: protocol.TrackRequest, membership: Membership) -> None:
        assert self.presence is not None
        if membership.presence_rate is None:
            membership.presence_rate = MessageRate(self._settings.realtime_max_presence_updates_per_second)
        presence_id, refusal = self.presence.track(
            subscriber, request, membership.presence_id, membership.presence_rate
        )
        if refusal is not None:
            self._reply(subscriber, refusal)
            return
        membership.presence_id = presence_id
        self._reply(subscriber, protocol.encode_ack(request.channel.name, request.ref))

    def _untrack(self, name: str, membership: Membership) -> None:
        presence_id, membership.presence_id = membership.presence_id, None
        if presence_id is not None and self.presence is not None:
            self.presence.untrack(name, presence_id)

    def _leave(self, subscriber: Subscriber, name: str) -> bool:
        """Untrack, stop delivering, forget; False when the subscriber was not a member."""
        members = self._members.get(name)
        membership = members.pop(subscriber, None) if members is not None else None
        if membership is None:
            return False
        if not members:
            del self._members[name]
        joined = self._joined.get(subscriber)
        if joined is not None:
            joined.discard(name)
            if not joined:
                del self._joined[subscriber]
        self._untrack(name, membership)
        stop_replay(subscriber, name)
        self._hub.unsubscribe(subscriber, name)
        subscriber.channels.discard(name)
        return True

    def _reply(self, subscriber: Subscriber, frame: str) -> None:
        self._hub.offer_to([subscriber], frame)

    def _abandon(self, subscriber: Subscriber, channel: str, reason: str, busy: bool = False) -> None:
        self._leave(subscriber, channel)
        retry_after = self._settings.realtime_retry_after_seconds if busy else None
        self._reply(
            subscriber,
            protocol.encode_error(reason, channel=channel, code="subscribe_failed", retry_after=retry_after),
        )


def _error(message: str, request: protocol.Request, code: str) -> str:
    channel = getattr(request, "channel", None)
    return protocol.encode_error(
        message, ref=request.ref, channel=channel.name if channel is not None else None, code=code
    )


def _forbidden(message: str, request: protocol.Request) -> str:
    return _error(message, request, "forbidden")
