"""The client's `since` against a real server: replay, Reset after pruned history or a restored database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from app import migrations
from client_test_support import WAIT, make_client
from fluxbase_realtime_client import Change, ChangeStream, Reset, SubscriptionError
from tests.conftest import make_settings
from tests.support.databases import scratch_database
from tests.support.server import ServerThread


async def _insert(db: psycopg.AsyncConnection, table: str, *names: str) -> None:
    for name in names:
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table)), (name,))


async def _take(stream: ChangeStream, count: int) -> list[Change | Reset]:
    async with asyncio.timeout(WAIT):
        return [await anext(stream) for _ in range(count)]


def _names(items: list[Change | Reset]) -> list[str | None]:
    return [(item.record or {}).get("name") if isinstance(item, Change) else None for item in items]


async def test_since_replays_what_followed_it_then_goes_live(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    async with make_client(server.ws_url) as client:
        first = client.changes(channel)
        await first.subscribed()
        await _insert(db, table, "a", "b", "c")
        seen = await _take(first, 3)
        assert isinstance(seen[0], Change)
    async with make_client(server.ws_url) as client:
        resumed = client.changes(channel, since=seen[0].id)
        await _insert(db, table, "d")
        assert _names(await _take(resumed, 3)) == ["b", "c", "d"]


async def test_since_newer_than_the_database_resets_then_takes_the_lower_ids_that_follow(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    """As after a restore: a client that dropped ids below its `since` would lose every later change."""
    channel = f"table:public.{table}"
    async with make_client(server.ws_url) as client:
        stream = client.changes(channel, since=2**62)
        [reset] = await _take(stream, 1)
        assert isinstance(reset, Reset) and reset.channel == channel and "newer" in reset.reason
        await _insert(db, table, "after the reset")
        [change] = await _take(stream, 1)
        assert isinstance(change, Change) and change.id < 2**62
        assert _names([change]) == ["after the reset"]


async def test_a_refused_subscribe_raises_from_the_stream(server: ServerThread) -> None:
    async with make_client(server.ws_url) as client:
        stream = client.changes("table:public.no_such_table")
        with pytest.raises(SubscriptionError, match="does not exist"):
            await stream.subscribed()
        with pytest.raises(SubscriptionError):
            await anext(stream)


class TestPrunedHistory:
    """On a database of its own: pruning the shared log would turn later `since` replays into gaps."""

    @pytest.fixture
    def database_url(self, server_url: str) -> Iterator[str]:
        with scratch_database(server_url) as url:
            migrations.upgrade(url)
            yield url

    async def test_a_pruned_since_yields_reset_then_what_remains_then_live(
        self, database_url: str, db: psycopg.AsyncConnection, table: str
    ) -> None:
        channel = f"table:public.{table}"
        settings = make_settings(
            database_url, realtime_retention_max_rows=5, realtime_retention_interval=0.05
        )
        with ServerThread(settings) as server:
            async with make_client(server.ws_url) as client:
                live = client.changes(channel)
                await live.subscribed()
                await _insert(db, table, *(f"old {n}" for n in range(10)))
                old = await _take(live, 10)
                await live.close()
                assert isinstance(old[0], Change) and isinstance(old[4], Change)
                # Pruning may run while the rows are inserted: wait until it has kept the newest 5.
                await _wait_for_pruning_past(db, old[4].id)
                stream = client.changes(channel, since=old[0].id)
                reset, *remaining = await _take(stream, 6)
                await _insert(db, table, "live")
                after = await _take(stream, 1)
        assert isinstance(reset, Reset) and "no longer retained" in reset.reason
        assert _names(remaining) == [f"old {n}" for n in range(5, 10)]
        assert _names(after) == ["live"]


async def _wait_for_pruning_past(db: psycopg.AsyncConnection, change_id: int) -> None:
    for _ in range(3000):
        row = await (await db.execute("SELECT fluxbase_realtime.oldest_retained_id()")).fetchone()
        if row is not None and row[0] > change_id:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the change log was never pruned past {change_id}")
