"""Presence on one instance: the state a subscriber starts from, diffs (joins, updates, leaves), keys by
`sub`, anonymous keys, and every way a presence leaves; the limits on it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import make_settings
from tests.support.channels import join, members, next_of, room, token
from tests.support.client import RealtimeClient, realtime_client
from tests.support.server import ServerThread


def url_for(server: ServerThread, sub: str | None) -> str:
    return server.ws_url if sub is None else f"{server.ws_url}?token={token(sub)}"


async def track(client: RealtimeClient, channel: str, state: dict[str, Any]) -> None:
    await client.send(type="track", channel=channel, state=state, ref="t")
    ack = await next_of(client, "ack", ref="t")
    assert ack["channel"] == channel


async def test_a_join_is_seen_by_everyone_and_by_later_subscribers(server: ServerThread) -> None:
    channel = room()
    async with (
        realtime_client(url_for(server, "ann")) as ann,
        realtime_client(url_for(server, "bob")) as watcher,
    ):
        await join(ann, channel)
        await join(watcher, channel)
        await track(ann, channel, {"name": "Ann"})
        diff = await next_of(watcher, "presence_diff")
        assert members(diff["joins"]) == {"ann": [{"name": "Ann"}]}
        assert diff["updates"] == {} and diff["leaves"] == {}
        [entry] = diff["joins"]["ann"]
        assert len(entry["presence_id"]) == 16
        async with realtime_client(server.ws_url) as late:
            state = await join(late, channel)
    assert state["presences"] == {"ann": [entry]}


async def test_three_tabs_of_one_user_are_one_key_with_three_entries(server: ServerThread) -> None:
    channel = room()
    async with (
        realtime_client(url_for(server, "ann")) as tab1,
        realtime_client(url_for(server, "ann")) as tab2,
        realtime_client(url_for(server, "ann")) as tab3,
    ):
        for n, tab in enumerate((tab1, tab2, tab3)):
            await join(tab, channel)
            await track(tab, channel, {"tab": n})
        async with realtime_client(server.ws_url) as watcher:
            state = await join(watcher, channel)
    assert members(state["presences"]) == {"ann": [{"tab": 0}, {"tab": 1}, {"tab": 2}]}
    assert len({e["presence_id"] for e in state["presences"]["ann"]}) == 3


async def test_an_update_is_an_update_not_a_leave_and_a_join(server: ServerThread) -> None:
    channel = room()
    async with realtime_client(url_for(server, "ann")) as ann, realtime_client(server.ws_url) as watcher:
        await join(ann, channel)
        await join(watcher, channel)
        await track(ann, channel, {"status": "online"})
        joined = await next_of(watcher, "presence_diff")
        await track(ann, channel, {"status": "away"})
        updated = await next_of(watcher, "presence_diff")
    [entry] = joined["joins"]["ann"]
    assert updated["joins"] == {} and updated["leaves"] == {}
    assert updated["updates"] == {"ann": [{"presence_id": entry["presence_id"], "state": {"status": "away"}}]}


@pytest.mark.parametrize("how", ["untrack", "unsubscribe", "disconnect"])
async def test_a_presence_leaves_with_its_last_state(server: ServerThread, how: str) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as watcher:
        await join(watcher, channel)
        async with realtime_client(url_for(server, "ann")) as ann:
            await join(ann, channel)
            await track(ann, channel, {"last": True})
            await next_of(watcher, "presence_diff")
            if how != "disconnect":
                await ann.send(type=how, channel=channel, ref="x")
                assert (await next_of(ann, "ack", ref="x"))["channel"] == channel
        left = await next_of(watcher, "presence_diff")
        async with realtime_client(server.ws_url) as late:
            state = await join(late, channel)
    assert members(left["leaves"]) == {"ann": [{"last": True}]}
    assert left["joins"] == {} and state["presences"] == {}


async def test_anonymous_connections_get_keys_of_their_own(server: ServerThread) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as one, realtime_client(server.ws_url) as two:
        for client in (one, two):
            await join(client, channel)
            await track(client, channel, {})
        async with realtime_client(server.ws_url) as watcher:
            state = await join(watcher, channel)
    keys = list(state["presences"])
    assert len(keys) == 2 and all(key.startswith("anon:") for key in keys)
    for key, [entry] in state["presences"].items():
        assert key == f"anon:{entry['presence_id']}"


async def test_untrack_without_a_presence_is_acked(server: ServerThread) -> None:
    channel = room()
    async with realtime_client(server.ws_url) as client:
        await join(client, channel)
        await client.send(type="untrack", channel=channel, ref="u")
        assert await client.receive() == {"type": "ack", "channel": channel, "ref": "u"}


class TestLimits:
    async def test_state_size(self, database_url: str) -> None:
        channel = room()
        with ServerThread(make_settings(database_url, realtime_max_presence_state_bytes=50)) as server:
            async with realtime_client(server.ws_url) as client:
                await join(client, channel)
                await client.send(type="track", channel=channel, state={"s": "x" * 60}, ref="big")
                error = await client.receive()
        assert (
            error["code"] == "presence_too_large" and "50 bytes" in error["error"] and error["ref"] == "big"
        )

    async def test_presences_per_channel(self, database_url: str) -> None:
        channel = room()
        with ServerThread(make_settings(database_url, realtime_max_presences_per_channel=2)) as server:
            async with (
                realtime_client(server.ws_url) as one,
                realtime_client(server.ws_url) as two,
                realtime_client(server.ws_url) as three,
            ):
                for client in (one, two, three):
                    await join(client, channel)
                await track(one, channel, {})
                await track(two, channel, {})
                await three.send(type="track", channel=channel, state={}, ref="third")
                error = await next_of(three, "error")
                await track(two, channel, {"updated": True})  # an update is not a new presence
        assert error["code"] == "too_many_presences" and "at most 2" in error["error"]

    async def test_track_rate(self, database_url: str) -> None:
        channel = room()
        # One token, refilled every 100 s: the second track in a row is always over the rate.
        settings = make_settings(database_url, realtime_max_presence_updates_per_second=0.01)
        with ServerThread(settings) as server:
            async with realtime_client(server.ws_url) as client:
                await join(client, channel)
                await track(client, channel, {"n": 1})
                await client.send(type="track", channel=channel, state={"n": 2}, ref="fast")
                error = await next_of(client, "error")
        assert error["code"] == "presence_rate_limited" and error["ref"] == "fast"
