"""Who may read and write a broadcast channel: PostgreSQL policies on
fluxbase_realtime_access.broadcast_channels, evaluated with the connection's role and claims, checked at
subscribe and again when the token is refreshed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from app import migrations
from tests.conftest import make_settings
from tests.support.channels import join, next_of, token
from tests.support.client import RealtimeClient, realtime_client
from tests.support.databases import scratch_database
from tests.support.server import ServerThread

TEAM = "(current_setting('request.jwt.claims', true)::jsonb ->> 'team')"
POLICIES = f"""
    DROP POLICY public_channels ON fluxbase_realtime_access.broadcast_channels;
    CREATE POLICY readers ON fluxbase_realtime_access.broadcast_channels FOR SELECT TO authenticated
        USING (action = 'read' AND (channel LIKE 'team-%' OR channel = 'private-' || {TEAM}));
    CREATE POLICY writers ON fluxbase_realtime_access.broadcast_channels FOR SELECT TO authenticated
        USING (action = 'write' AND channel IN ('team-' || {TEAM}, 'private-' || {TEAM}));
"""


@pytest.fixture(scope="module")
def policed_url(server_url: str) -> Iterator[str]:
    """A database of its own: the policies apply to every channel of a database."""
    with scratch_database(server_url) as url:
        migrations.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(POLICIES)
        yield url


@pytest.fixture(scope="module")
def policed(policed_url: str) -> Iterator[ServerThread]:
    with ServerThread(make_settings(policed_url)) as server:
        yield server


@pytest.fixture
async def sender(policed: ServerThread) -> AsyncIterator[RealtimeClient]:
    async with realtime_client(f"{policed.ws_url}?token={token('svc', role='service_role')}") as client:
        yield client


def as_member(server: ServerThread, team: str, sub: str = "ann", **claims: Any) -> str:
    return f"{server.ws_url}?token={token(sub, team=team, **claims)}"


async def refused(client: RealtimeClient, message: dict[str, Any]) -> dict[str, Any]:
    await client.send(**message, ref="r")
    error = await next_of(client, "error")
    assert error["ref"] == "r"
    return error


async def test_a_channel_no_policy_allows_reading_is_refused(policed: ServerThread) -> None:
    async with realtime_client(policed.ws_url) as anonymous:
        error = await refused(anonymous, {"type": "subscribe", "channel": "broadcast:team-a"})
    assert error["code"] == "forbidden" and "subscribe" in error["error"]
    async with realtime_client(as_member(policed, "a")) as member:
        error = await refused(member, {"type": "subscribe", "channel": "broadcast:private-b"})
    assert error["code"] == "forbidden"


async def test_read_without_write(policed: ServerThread, sender: RealtimeClient) -> None:
    channel = "broadcast:team-a"
    async with realtime_client(as_member(policed, "b", "bob")) as outsider:
        await join(outsider, channel)
        await join(sender, channel)
        broadcast = await refused(outsider, {"type": "broadcast", "channel": channel, "event": "e"})
        track = await refused(outsider, {"type": "track", "channel": channel, "state": {}})
        await sender.send(type="broadcast", channel=channel, event="for readers", payload=1)
        received = await next_of(outsider, "broadcast")
    assert broadcast["code"] == track["code"] == "forbidden"
    assert "write" in broadcast["error"]
    assert received["event"] == "for readers"


async def test_write_where_a_policy_allows_it(policed: ServerThread) -> None:
    channel = "broadcast:team-a"
    async with (
        realtime_client(as_member(policed, "a", "ann")) as ann,
        realtime_client(as_member(policed, "b", "bob")) as bob,
    ):
        await join(ann, channel)
        await join(bob, channel)
        await ann.send(type="broadcast", channel=channel, event="hello", payload={}, ref="ok")
        assert (await next_of(ann, "ack"))["ref"] == "ok"
        assert (await next_of(bob, "broadcast"))["event"] == "hello"


async def test_service_role_may_do_everything(policed: ServerThread, sender: RealtimeClient) -> None:
    await join(sender, "broadcast:private-z")
    await sender.send(type="track", channel="broadcast:private-z", state={}, ref="t")
    assert (await next_of(sender, "ack"))["ref"] == "t"


async def test_a_refreshed_token_that_loses_read_access_is_unsubscribed(
    policed: ServerThread, sender: RealtimeClient
) -> None:
    private, public = "broadcast:private-a", "broadcast:team-c"
    async with realtime_client(as_member(policed, "a")) as ann:
        await join(ann, private)
        await join(ann, public)
        await join(sender, private)
        await join(sender, public)
        await ann.send(type="access_token", token=token("ann", team="c"), ref="refresh")
        assert await next_of(ann, "ack", ref="refresh") == {"type": "ack", "ref": "refresh"}
        lost = await next_of(ann, "error")
        await sender.send(type="broadcast", channel=private, event="secret", payload={})
        await sender.send(type="broadcast", channel=public, event="sentinel", payload={})
        after = await next_of(ann, "broadcast")
    assert lost["code"] == "forbidden" and lost["channel"] == private
    assert after["event"] == "sentinel"
