"""Presence on broadcast channels: track and untrack, the limits on them, and the diffs subscribers get.

Diffs are coalesced: every change to a channel's presence within one turn of the event loop (a burst of
joins, a peer's full state) reaches each subscriber as one `presence_diff`, built once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Collection

from app import protocol
from app.config import Settings
from app.services.cluster import Cluster
from app.services.hub import Hub
from app.services.limits import Admission, MessageRate
from app.services.presence import Presence, PresenceDiff, PresenceTable
from app.services.subscribers import Subscriber
from app.wire import text_frame


class PresenceRooms:
    """This instance's side of presence: its connections' presences, and diffs for its subscribers."""

    def __init__(
        self,
        hub: Hub,
        table: PresenceTable,
        settings: Settings,
        members: Callable[[str], Collection[Subscriber]],
    ) -> None:
        self._hub = hub
        self._table = table
        self._settings = settings
        self._members = members
        self.cluster: Cluster | None = None  # set once the cluster exists (it calls back into this)
        self._pending: dict[str, PresenceDiff] = {}
        self._flush_scheduled = False

    def state_frame(self, channel: str) -> str:
        """The channel's whole presence state. Pending diffs go out first: the state includes them."""
        self.flush(channel)
        return protocol.encode_presence_state(channel, self._table.entries(channel))

    def track(
        self,
        subscriber: Subscriber,
        request: protocol.TrackRequest,
        presence_id: str | None,
        rate: MessageRate,
    ) -> tuple[str | None, str | None]:
        """(the presence id, None), or (None, the error frame refusing it)."""
        name = request.channel.name
        settings = self._settings
        if rate.admit() is not Admission.ACCEPT:
            limit = settings.realtime_max_presence_updates_per_second
            return None, _error(
                f"presence rate exceeded: at most {limit:g} track/untrack per second on a channel",
                request,
                "presence_rate_limited",
            )
        if len(request.state.encode()) > settings.realtime_max_presence_state_bytes:
            return None, _error(
                f"presence state is larger than {settings.realtime_max_presence_state_bytes} bytes",
                request,
                "presence_too_large",
            )
        if presence_id is None:
            limit = settings.realtime_max_presences_per_channel
            if self._table.count(name) >= limit:
                return None, _error(
                    f"too many presences: at most {limit} on one channel", request, "too_many_presences"
                )
            presence_id = secrets.token_hex(8)
        key = subscriber.principal.user_id or f"anon:{presence_id}"
        assert self.cluster is not None
        self.changed(name, self.cluster.track(name, presence_id, Presence(key, request.state)))
        return presence_id, None

    def untrack(self, channel: str, presence_id: str) -> None:
        assert self.cluster is not None
        self.changed(channel, self.cluster.untrack(channel, presence_id))

    def changed(self, channel: str, diff: PresenceDiff) -> None:
        """A diff for the channel's subscribers (local or from another instance): sent once this turn of
        the event loop is over, merged with the turn's other diffs of the channel."""
        if not diff:
            return
        pending = self._pending.get(channel)
        if pending is None:
            self._pending[channel] = diff
        else:
            pending.merge(diff)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_all)

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        for channel in list(self._pending):
            self.flush(channel)

    def flush(self, channel: str) -> None:
        diff = self._pending.pop(channel, None)
        if not diff:
            return
        members = self._members(channel)
        if members:
            frame = protocol.encode_presence_diff(channel, diff.joins, diff.updates, diff.leaves)
            self._hub.offer_to(list(members), frame, text_frame(frame))


def _error(message: str, request: protocol.TrackRequest, code: str) -> str:
    return protocol.encode_error(message, ref=request.ref, channel=request.channel.name, code=code)
