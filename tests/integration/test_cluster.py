"""Several instances on one database behave as one service: broadcasts and presence cross between them,
through PostgreSQL or Redis; an instance killed with kill -9 has its presences leave everywhere; after a
bus outage every instance ends with the same presence state."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis

from app.config import Settings
from tests.conftest import JWT_SECRET, make_settings
from tests.support.channels import PresenceView, join, next_of, room, token
from tests.support.client import RealtimeClient, realtime_client
from tests.support.processes import free_port, server_process
from tests.support.server import ServerThread

# Short, so that a lost instance is noticed quickly; a bound of the test's waits, not asserted.
PRESENCE_TIMEOUT = 1.0


def settings_for(database_url: str, bus: str, redis_url: str | None) -> Settings:
    return make_settings(
        database_url,
        realtime_bus_channel=bus,
        realtime_redis_url=redis_url,
        realtime_presence_timeout=PRESENCE_TIMEOUT,
    )


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A private redis-server on `port`, stopped on exit."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(500):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.01)
        yield process
    finally:
        process.kill()
        process.wait()


@pytest.fixture(params=["postgres", "redis"])
def bus(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """(a bus channel of this test's own, the Redis URL or None for the PostgreSQL bus)."""
    channel = f"bus_{uuid.uuid4().hex[:12]}"
    yield channel, ("redis://127.0.0.1:6379/0" if request.param == "redis" else None)


@contextlib.asynccontextmanager
async def two_instances(database_url: str, bus: tuple[str, str | None]) -> AsyncIterator[tuple[str, str]]:
    settings = settings_for(database_url, *bus)
    with ServerThread(settings) as first, ServerThread(settings) as second:
        # Each has heard of the other once both have a peer (their start-up sync requests).
        for _ in range(1000):
            if first.services.cluster.peers and second.services.cluster.peers:
                break
            await asyncio.sleep(0.01)
        yield first.ws_url, second.ws_url


async def test_broadcasts_cross_both_ways(database_url: str, bus: tuple[str, str | None]) -> None:
    channel = room()
    async with two_instances(database_url, bus) as (one, two):
        async with realtime_client(one) as a, realtime_client(two) as b:
            await join(a, channel)
            await join(b, channel)
            await a.send(type="broadcast", channel=channel, event="from one", payload={"n": 1}, ref="a1")
            assert (await next_of(a, "ack"))["ref"] == "a1"
            assert await next_of(b, "broadcast") == {
                "type": "broadcast",
                "channel": channel,
                "event": "from one",
                "payload": {"n": 1},
            }
            await b.send(type="broadcast", channel=channel, event="from two", payload=[2])
            assert (await next_of(a, "broadcast"))["payload"] == [2]
        async with httpx.AsyncClient(
            base_url=one.replace("ws://", "http://").removesuffix("/realtime")
        ) as http:
            stats = (await http.get("/api/realtime/stats")).json()
    assert stats["bus_transport"] == ("redis" if bus[1] else "postgres")
    assert stats["bus_healthy"] is True and stats["bus_peers"] == 1 and stats["bus_messages_received"] > 0


async def test_presence_converges(database_url: str, bus: tuple[str, str | None]) -> None:
    channel = room()
    async with two_instances(database_url, bus) as (one, two):
        async with (
            realtime_client(f"{one}?token={token('ann')}") as ann,
            realtime_client(f"{two}?token={token('bob')}") as bob,
            realtime_client(two) as watcher,
        ):
            await join(ann, channel)
            await ann.send(type="track", channel=channel, state={"at": 1}, ref="t")
            await next_of(ann, "ack")
            view = PresenceView(await join(watcher, channel))
            await view.until(watcher, lambda s: s == {"ann": [{"at": 1}]})
            await join(bob, channel)
            await bob.send(type="track", channel=channel, state={"at": 2}, ref="t")
            await ann.send(type="track", channel=channel, state={"at": 3}, ref="u")
            await view.until(watcher, lambda s: s == {"ann": [{"at": 3}], "bob": [{"at": 2}]})
            async with realtime_client(one) as on_one, realtime_client(two) as on_two:
                first = PresenceView(await join(on_one, channel)).states()
                second = PresenceView(await join(on_two, channel)).states()
    assert first == second == {"ann": [{"at": 3}], "bob": [{"at": 2}]}


async def test_an_instance_killed_has_its_presences_leave(database_url: str) -> None:
    channel, bus_channel = room(), f"bus_{uuid.uuid4().hex[:12]}"
    env = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "REALTIME_BUS_CHANNEL": bus_channel,
        "REALTIME_PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT),
        "LOG_LEVEL": "warning",
    }
    with ServerThread(settings_for(database_url, bus_channel, None)) as staying:
        async with server_process(env, "--no-migrate") as doomed:
            async with realtime_client(staying.ws_url) as watcher:
                view = PresenceView(await join(watcher, channel))
                ghost = await _connect_and_track(doomed.ws_url, channel, "ghost")
                await view.until(watcher, lambda s: "ghost" in s)
                doomed.process.send_signal(signal.SIGKILL)
                doomed.process.wait()
                await view.until(watcher, lambda s: "ghost" not in s)
                await ghost.aclose()
    assert view.states() == {}


async def _connect_and_track(url: str, channel: str, sub: str) -> contextlib.AsyncExitStack:
    stack = contextlib.AsyncExitStack()
    client = await stack.enter_async_context(realtime_client(f"{url}?token={token(sub)}"))
    await join(client, channel)
    await client.send(type="track", channel=channel, state={}, ref="t")
    await next_of(client, "ack")
    return stack


async def test_a_redis_restart_ends_with_the_same_state_everywhere(database_url: str) -> None:
    channel, port = room(), free_port()
    bus = (f"bus_{uuid.uuid4().hex[:12]}", f"redis://127.0.0.1:{port}/0")
    with redis_server(port) as first_redis:
        async with two_instances(database_url, bus) as (one, two):
            async with (
                realtime_client(f"{one}?token={token('ann')}") as ann,
                realtime_client(two) as watcher,
            ):
                await join(ann, channel)
                await _track(ann, channel, {"v": 1})
                view = PresenceView(await join(watcher, channel))
                await view.until(watcher, lambda s: s == {"ann": [{"v": 1}]})
                first_redis.kill()
                first_redis.wait()
                # While the bus is down: an update, and a new presence, that the other instance misses.
                await _track(ann, channel, {"v": 2})
                late = await _connect_and_track(one, channel, "late")
                with redis_server(port):
                    await view.until(watcher, lambda s: s == {"ann": [{"v": 2}], "late": [{}]})
                await late.aclose()


async def test_a_postgres_bus_reconnect_ends_with_the_same_state(database_url: str, db: Any) -> None:
    channel = room()
    bus = (f"bus_{uuid.uuid4().hex[:12]}", None)
    async with two_instances(database_url, bus) as (one, two):
        async with realtime_client(f"{one}?token={token('ann')}") as ann, realtime_client(two) as watcher:
            await join(ann, channel)
            view = PresenceView(await join(watcher, channel))
            await db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'fluxbase-realtime-bus'"
            )
            await _track(ann, channel, {"after": "outage"})
            await view.until(watcher, lambda s: s == {"ann": [{"after": "outage"}]})


async def _track(client: RealtimeClient, channel: str, state: dict[str, Any]) -> None:
    await client.send(type="track", channel=channel, state=state, ref="t")
    await next_of(client, "ack", ref="t")


async def test_an_instance_that_starts_receives_the_full_state(database_url: str) -> None:
    channel, bus = room(), (f"bus_{uuid.uuid4().hex[:12]}", None)
    settings = settings_for(database_url, *bus)
    with ServerThread(settings) as first:
        async with realtime_client(f"{first.ws_url}?token={token('ann')}") as ann:
            await join(ann, channel)
            await _track(ann, channel, {"early": True})
            with ServerThread(settings) as later:
                async with realtime_client(later.ws_url) as watcher:
                    view = PresenceView(await join(watcher, channel))
                    await view.until(watcher, lambda s: s == {"ann": [{"early": True}]})


async def test_peer_packets_that_are_not_the_protocol_are_ignored(database_url: str, db: Any) -> None:
    """Whatever else arrives on the bus channel (a stray NOTIFY), the instances carry on."""
    channel, bus = room(), (f"bus_{uuid.uuid4().hex[:12]}", None)
    async with two_instances(database_url, bus) as (one, two):
        for junk in (
            "not json",
            "{}",
            "[1, 2, {}]",
            '[1, {"t": "p", "o": "x"}]',
            '[1, {"t": "s", "o": "y", "s": 1, "p": 5}]',
        ):
            await db.execute("SELECT pg_notify(%s, %s)", (bus[0], junk))
        async with realtime_client(one) as a, realtime_client(two) as b:
            await join(a, channel)
            await join(b, channel)
            await a.send(type="broadcast", channel=channel, event="still", payload=1)
            assert (await next_of(b, "broadcast"))["event"] == "still"
