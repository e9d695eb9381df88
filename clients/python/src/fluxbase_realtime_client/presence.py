"""A channel's presence, kept from `presence_state` and `presence_diff` (pure).

Keyed by presence key (the token's `sub`), then by presence_id (one per connection that tracks): one user
with three tabs is one key with three entries. An update replaces an entry's state in place.
"""

from __future__ import annotations

from typing import Any

from fluxbase_realtime_client.messages import PresenceDiff, PresenceEntry, Presences, PresenceState


class Presence:
    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        """Forget everything (the connection is gone; the next subscribe brings a full state)."""
        self._entries = {}

    def apply(self, message: PresenceState | PresenceDiff) -> None:
        if isinstance(message, PresenceState):
            self._entries = {}
            self._add(message.presences)
            return
        # The protocol's order: leaves first, then joins and updates, by presence_id.
        for key, entries in message.leaves.items():
            held = self._entries.get(key)
            if held is None:
                continue
            for entry in entries:
                held.pop(entry.presence_id, None)
            if not held:
                del self._entries[key]
        self._add(message.joins)
        self._add(message.updates)

    def _add(self, presences: Presences) -> None:
        for key, entries in presences.items():
            held = self._entries.setdefault(key, {})
            for entry in entries:
                held[entry.presence_id] = entry.state

    def state(self) -> dict[str, list[PresenceEntry]]:
        """A copy: presence key -> its entries, in the order they joined."""
        return {
            key: [PresenceEntry(presence_id, state) for presence_id, state in entries.items()]
            for key, entries in self._entries.items()
        }

    def keys(self) -> list[str]:
        return list(self._entries)
