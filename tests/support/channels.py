"""Helpers for tests of broadcast channels and presence: tokens, unique channel names, and reading a
client's frames up to one that matches."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import orjson

from tests.conftest import JWT_SECRET
from tests.support.client import RealtimeClient


def token(sub: str | None, role: str = "authenticated", **claims: Any) -> str:
    body: dict[str, Any] = {"exp": int(time.time()) + 600, "role": role, **claims}
    if sub is not None:
        body["sub"] = sub
    return jwt.encode(body, JWT_SECRET, algorithm="HS256")


def room() -> str:
    """A broadcast channel no other test uses."""
    return f"broadcast:room-{uuid.uuid4().hex[:10]}"


async def join(client: RealtimeClient, channel: str, **options: Any) -> dict[str, Any]:
    """Subscribe to a broadcast channel; returns its presence state (the frame after the ack). `options`
    may hold `self`, which no keyword argument can be."""
    await client.send_raw(orjson.dumps({"type": "subscribe", "channel": channel, **options}).decode())
    ack = await client.receive()
    assert ack["type"] == "ack" and ack["channel"] == channel, ack
    state = await client.receive()
    assert state["type"] == "presence_state" and state["channel"] == channel, state
    return state


async def next_of(client: RealtimeClient, kind: str, **fields: Any) -> dict[str, Any]:
    """The next frame of type `kind` (with `fields`), skipping presence diffs and other broadcasts."""
    while True:
        message = await client.receive()
        if message["type"] == kind and all(message.get(k) == v for k, v in fields.items()):
            return message
        assert message["type"] in ("presence_diff", "broadcast", "presence_state"), message


def members(presences: dict[str, list[dict[str, Any]]]) -> dict[str, list[Any]]:
    """{key: sorted states} of a presence_state's `presences` (or a diff's joins/leaves)."""
    return {key: sorted((e["state"] for e in entries), key=repr) for key, entries in presences.items()}


class PresenceView:
    """A channel's presences as a client keeps them: the presence_state, then every presence_diff."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.entries: dict[str, Any] = {
            e["presence_id"]: (key, e["state"]) for key, es in state["presences"].items() for e in es
        }

    def apply(self, diff: dict[str, Any]) -> None:
        # Leaves first, as the protocol says: a presence may leave and come back in one diff.
        for entries in diff["leaves"].values():
            for entry in entries:
                self.entries.pop(entry["presence_id"], None)
        for part in ("joins", "updates"):
            for key, entries in diff[part].items():
                for entry in entries:
                    self.entries[entry["presence_id"]] = (key, entry["state"])

    def states(self) -> dict[str, list[Any]]:
        by_key: dict[str, list[Any]] = {}
        for key, state in self.entries.values():
            by_key.setdefault(key, []).append(state)
        return {key: sorted(states, key=repr) for key, states in by_key.items()}

    async def until(self, client: RealtimeClient, condition: Any) -> None:
        """Apply the client's presence diffs until `condition(self.states())` holds."""
        while not condition(self.states()):
            message = await client.receive()
            if message["type"] == "presence_diff":
                self.apply(message)
