"""Broadcast and presence through the client against a real server: send with ack, `self`, database
messages resumed after a cut connection, presence kept from state and diffs, re-tracked after a cut."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import psycopg
import pytest

from client_test_support import WAIT, cut, make_client
from fluxbase_realtime_client import (
    Broadcast,
    BroadcastChannel,
    PresenceDiff,
    PresenceState,
    ServerError,
)
from tests.conftest import JWT_SECRET
from tests.support.server import ServerThread


def _room() -> str:
    return f"broadcast:room-{uuid.uuid4().hex[:10]}"


def _token(sub: str) -> str:
    claims = {"sub": sub, "role": "authenticated", "exp": int(time.time()) + 600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def _next_broadcast(room: BroadcastChannel) -> Broadcast:
    """The next broadcast, past presence messages."""
    async with asyncio.timeout(WAIT):
        async for message in room:
            if isinstance(message, Broadcast):
                return message
    raise AssertionError("the channel ended")


async def _presence_until(room: BroadcastChannel, holds: Callable[[dict[str, Any]], bool]) -> None:
    """Read the channel's presence messages until its presence state satisfies `holds`."""
    async with asyncio.timeout(WAIT):
        while not holds(_states(room)):
            message = await anext(room)
            assert isinstance(message, PresenceState | PresenceDiff | Broadcast), message


def _states(room: BroadcastChannel) -> dict[str, list[Any]]:
    return {key: [entry.state for entry in entries] for key, entries in room.presence_state().items()}


async def test_a_broadcast_is_acked_for_the_sender_and_delivered_to_the_others(server: ServerThread) -> None:
    name = _room()
    async with make_client(server.ws_url) as alice, make_client(server.ws_url) as bob:
        sender, receiver = alice.channel(name), bob.channel(name)
        echo = alice.channel(name.replace("room", "echo"), self_broadcasts=True)
        await sender.subscribed()
        await receiver.subscribed()
        await sender.send("cursor", {"x": 1})
        await sender.send("sentinel", None)
        got = await _next_broadcast(receiver)
        assert (got.channel, got.event, got.payload, got.id) == (name, "cursor", {"x": 1}, None)
        assert (await _next_broadcast(receiver)).event == "sentinel"
        # Without `self` the sender hears nothing of its own: its next broadcast is one from bob.
        await receiver.send("from bob", 2)
        assert (await _next_broadcast(sender)).event == "from bob"
        await echo.send("to myself", 3)
        assert (await _next_broadcast(echo)).payload == 3


async def test_a_refused_send_raises_server_error(server: ServerThread) -> None:
    async with make_client(server.ws_url) as client:
        room = client.channel(_room())
        await room.subscribed()
        with pytest.raises(ServerError) as refused:
            await room.send("big", "x" * 40_000)  # over the 32 KiB payload limit, under the 64 KiB frame
        assert refused.value.code == "payload_too_large"


async def test_database_broadcasts_missed_during_a_cut_are_replayed_once_in_order(
    server: ServerThread, db: psycopg.AsyncConnection
) -> None:
    name = _room()
    topic = name.removeprefix("broadcast:")

    async def send_from_database(n: int) -> None:
        await db.execute("SELECT realtime_broadcast(%s, 'n', %s::jsonb)", (topic, str(n)))

    async with make_client(server.ws_url) as client:
        room = client.channel(name)
        await room.subscribed()
        await send_from_database(0)
        first = await _next_broadcast(room)
        connects = client.connects
        cut(client)
        for n in range(1, 6):  # committed while the client is away (or reconnecting)
            await send_from_database(n)
        received = [first] + [await _next_broadcast(room) for _ in range(5)]
        assert client.connects > connects
    assert [m.payload for m in received] == [0, 1, 2, 3, 4, 5]
    ids = [m.id for m in received]
    assert None not in ids and ids == sorted(set(ids))  # type: ignore[type-var]


async def test_presence_is_kept_from_state_and_diffs_and_re_tracked_after_a_cut(
    server: ServerThread,
) -> None:
    name = _room()
    async with (
        make_client(server.ws_url, token=_token("ann")) as ann,
        make_client(server.ws_url, token=_token("bob")) as bob,
    ):
        ann_room, bob_room = ann.channel(name), bob.channel(name)
        await ann_room.track({"name": "Ann"})
        await _presence_until(bob_room, lambda s: s == {"ann": [{"name": "Ann"}]})
        await ann_room.track({"name": "Ann", "typing": True})  # an update, in place
        await _presence_until(bob_room, lambda s: s == {"ann": [{"name": "Ann", "typing": True}]})
        await bob_room.track({"name": "Bob"})
        await _presence_until(ann_room, lambda s: set(s) == {"ann", "bob"})
        [before] = bob_room.presence_state()["ann"]
        cut(ann)
        # Ann's old connection leaves and Ann's client re-tracks its last state on the new one: one entry
        # again, with a new presence_id.
        def re_tracked(_: object) -> bool:
            entries = bob_room.presence_state().get("ann", [])
            renewed = [(e.presence_id != before.presence_id, e.state) for e in entries]
            return renewed == [(True, {"name": "Ann", "typing": True})]

        await _presence_until(bob_room, re_tracked)
        await _presence_until(
            ann_room, lambda s: s == {"ann": [{"name": "Ann", "typing": True}], "bob": [{"name": "Bob"}]}
        )
        await ann_room.untrack()
        await _presence_until(bob_room, lambda s: s == {"bob": [{"name": "Bob"}]})
