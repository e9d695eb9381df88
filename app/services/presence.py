"""Presence: who is on each broadcast channel, across every instance, and what changed.

Each instance (an *origin*) owns the presences of its own connections and tells the others about them
(app/services/cluster.py); this table merges them all. It is pure bookkeeping, with no I/O: every change
returns the diff that subscribers are sent, so the rules are tested without a socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Presence:
    """One connection's presence on one channel: its key (the token's `sub`, or its own for an anonymous
    connection) and its state (JSON text)."""

    key: str
    state: str


# What one origin holds on one channel: presence_id -> Presence.
ChannelPresences = dict[str, Presence]
# An origin's whole state: channel -> its presences there.
OriginState = Mapping[str, Mapping[str, Presence]]


@dataclass(slots=True)
class PresenceDiff:
    """The presences that joined, changed state, and left one channel: key -> [(presence_id, state)]."""

    joins: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    updates: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    leaves: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.joins or self.updates or self.leaves)

    def join(self, presence_id: str, presence: Presence) -> None:
        self.joins.setdefault(presence.key, []).append((presence_id, presence.state))

    def update(self, presence_id: str, presence: Presence) -> None:
        self.updates.setdefault(presence.key, []).append((presence_id, presence.state))

    def leave(self, presence_id: str, presence: Presence) -> None:
        self.leaves.setdefault(presence.key, []).append((presence_id, presence.state))

    def merge(self, later: PresenceDiff) -> None:
        """Fold a later diff of the same channel into this one (the net effect of both).

        A presence that joined and then changed is a join with the newer state; one that joined and left
        is nothing; one that left and joined again (a new id) is a leave and a join.
        """
        for key, entries in later.joins.items():
            self.joins.setdefault(key, []).extend(entries)
        for key, entries in later.updates.items():
            for presence_id, state in entries:
                if not _replace(self.joins, key, presence_id, state):
                    _remove(self.updates, key, presence_id)
                    self.updates.setdefault(key, []).append((presence_id, state))
        for key, entries in later.leaves.items():
            for presence_id, state in entries:
                if _remove(self.joins, key, presence_id):
                    continue
                _remove(self.updates, key, presence_id)
                self.leaves.setdefault(key, []).append((presence_id, state))


def _replace(entries: dict[str, list[tuple[str, str]]], key: str, presence_id: str, state: str) -> bool:
    for i, (pid, _) in enumerate(entries.get(key, ())):
        if pid == presence_id:
            entries[key][i] = (presence_id, state)
            return True
    return False


def _remove(entries: dict[str, list[tuple[str, str]]], key: str, presence_id: str) -> bool:
    kept = [(pid, state) for pid, state in entries.get(key, ()) if pid != presence_id]
    if key not in entries or len(kept) == len(entries[key]):
        return False
    if kept:
        entries[key] = kept
    else:
        del entries[key]
    return True


class PresenceTable:
    """Channel -> presence_id -> (origin, Presence), merged over every origin. Presence ids are unique
    across the cluster (random), so an id names one presence wherever it comes from."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, tuple[str, Presence]]] = {}
        self._origins: dict[str, dict[str, ChannelPresences]] = {}

    def put(self, origin: str, channel: str, presence_id: str, presence: Presence) -> PresenceDiff:
        """Join, or update when the presence is already there (an empty diff when nothing changed)."""
        diff = PresenceDiff()
        members = self._channels.setdefault(channel, {})
        known = members.get(presence_id)
        if known is not None and known[1] == presence:
            return diff
        members[presence_id] = (origin, presence)
        self._origins.setdefault(origin, {}).setdefault(channel, {})[presence_id] = presence
        if known is None:
            diff.join(presence_id, presence)
        elif known[1].key != presence.key:
            diff.leave(presence_id, known[1])
            diff.join(presence_id, presence)
        else:
            diff.update(presence_id, presence)
        return diff

    def remove(self, origin: str, channel: str, presence_id: str) -> PresenceDiff:
        diff = PresenceDiff()
        members = self._channels.get(channel)
        known = members.get(presence_id) if members else None
        if members is None or known is None or known[0] != origin:
            return diff
        del members[presence_id]
        if not members:
            del self._channels[channel]
        held = self._origins[origin][channel]
        del held[presence_id]
        if not held:
            del self._origins[origin][channel]
            if not self._origins[origin]:
                del self._origins[origin]
        diff.leave(presence_id, known[1])
        return diff

    def replace_origin(self, origin: str, state: OriginState) -> dict[str, PresenceDiff]:
        """Make the origin's presences exactly `state` (a full state it sent); the diffs, by channel."""
        diffs: dict[str, PresenceDiff] = {}
        held = self._origins.get(origin, {})
        for channel in list(held):
            wanted = state.get(channel, {})
            for presence_id in [p for p in held[channel] if p not in wanted]:
                _fold(diffs, channel, self.remove(origin, channel, presence_id))
        for channel, presences in state.items():
            for presence_id, presence in presences.items():
                _fold(diffs, channel, self.put(origin, channel, presence_id, presence))
        return {c: d for c, d in diffs.items() if d}

    def drop_origin(self, origin: str) -> dict[str, PresenceDiff]:
        """Every presence of an origin leaves (it died, or said goodbye)."""
        return self.replace_origin(origin, {})

    def origin_state(self, origin: str) -> dict[str, ChannelPresences]:
        return {channel: dict(presences) for channel, presences in self._origins.get(origin, {}).items()}

    def origins(self) -> Iterable[str]:
        return list(self._origins)

    def entries(self, channel: str) -> dict[str, list[tuple[str, str]]]:
        """The channel's presences as subscribers see them: key -> [(presence_id, state)]."""
        entries: dict[str, list[tuple[str, str]]] = {}
        for presence_id, (_, presence) in self._channels.get(channel, {}).items():
            entries.setdefault(presence.key, []).append((presence_id, presence.state))
        return entries

    def count(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def has(self, channel: str, presence_id: str) -> bool:
        return presence_id in self._channels.get(channel, {})


def _fold(diffs: dict[str, PresenceDiff], channel: str, diff: PresenceDiff) -> None:
    if diff:
        if channel in diffs:
            diffs[channel].merge(diff)
        else:
            diffs[channel] = diff
