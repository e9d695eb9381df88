"""Resume with `since`: replay, the seam to live delivery, gaps, restarts, instances, retention."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from app import migrations
from tests.conftest import make_settings
from tests.support.client import RealtimeClient, realtime_client
from tests.support.databases import scratch_database
from tests.support.logged import until_logged
from tests.support.modes import BOTH_MODES
from tests.support.server import ServerThread


def _names(messages: list[dict[str, Any]]) -> list[str]:
    return [m["payload"]["record"]["name"] for m in messages]


async def _insert(db: psycopg.AsyncConnection, table: str, *names: str) -> None:
    for name in names:
        await db.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(sql.Identifier(table)), (name,))


@contextlib.asynccontextmanager
async def _writing(database_url: str, table: str, count: int) -> AsyncIterator[asyncio.Task[None]]:
    """A writer inserting w0, w1, ... one per transaction in the background."""

    async def write() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for n in range(count):
                await _insert(conn, table, f"w{n}")
                await asyncio.sleep(0)

    task = asyncio.create_task(write())
    try:
        yield task
    finally:
        await task


@BOTH_MODES
async def test_resume_with_since_has_no_gap_and_no_duplicate_at_the_seam(
    server: ServerThread, database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel)  # before the writer starts: it sees every row from w0
        async with _writing(database_url, table, 600):
            seen = await client.broadcasts(100)
            await client.connection.close()
            # Three more sessions, each resuming from the last id it saw while the writer keeps writing.
            for _ in range(2):
                async with realtime_client(server.ws_url) as resumed:
                    ack = await resumed.subscribe(channel, ref="resume", since=seen[-1]["id"])
                    assert ack == {"type": "ack", "channel": channel, "ref": "resume"}
                    seen += await resumed.broadcasts(100)
            async with realtime_client(server.ws_url) as resumed:
                await resumed.subscribe(channel, since=seen[-1]["id"])
                seen += await resumed.until_broadcast(lambda m: m["payload"]["record"]["name"] == "w599")
    assert _names(seen) == [f"w{n}" for n in range(600)]
    ids = [m["id"] for m in seen]
    assert ids == sorted(set(ids))


@BOTH_MODES
async def test_since_as_a_string_and_invalid_since(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    await _insert(db, table, "first", "second")
    await until_logged(db, table, 2)  # a plain subscribe starts after what is logged
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel)
        await _insert(db, table, "third", "fourth")
        third, _ = await client.broadcasts(2)
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel, since=str(third["id"]))
        [fourth] = await client.broadcasts(1)
        assert fourth["payload"]["record"]["name"] == "fourth"
        for bad in (-1, "12a", 1.5, True, "9" * 30, {"id": 1}):
            await client.send(type="subscribe", channel=channel, since=bad, ref="bad")
            error = await client.receive()
            assert error["type"] == "error" and "since" in error["error"] and error["ref"] == "bad"


@BOTH_MODES
async def test_a_fresh_subscribe_without_since_gets_only_new_changes(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    await _insert(db, table, "before")
    await until_logged(db, table, 1)  # committed, and in logical mode written by the consumer too
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}")
        await _insert(db, table, "after")
        [change] = await client.broadcasts(1)
    assert change["payload"]["record"]["name"] == "after"


@BOTH_MODES
async def test_since_from_before_everything_replays_the_whole_retained_channel(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    await _insert(db, table, "a", "b")
    await db.execute(sql.SQL("UPDATE {} SET name = 'b2' WHERE name = 'b'").format(sql.Identifier(table)))
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(f"table:public.{table}", since=0)
        replayed = await client.broadcasts(3)
        await _insert(db, table, "live")
        [live] = await client.broadcasts(1)
    assert [m["payload"]["type"] for m in replayed] == ["INSERT", "INSERT", "UPDATE"]
    assert replayed[2]["payload"]["old_record"]["name"] == "b"
    assert replayed[2]["payload"]["record"]["name"] == "b2"
    assert live["payload"]["record"]["name"] == "live"


@BOTH_MODES
async def test_a_backlog_larger_than_the_queue_is_paced_not_cut_off(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    t = sql.Identifier(table)
    await db.execute(
        sql.SQL("INSERT INTO {} (name) SELECT 'b' || g FROM generate_series(1, 3000) g").format(t)
    )
    settings = make_settings(database_url, realtime_send_queue_size=16, realtime_slow_client_timeout=0.2)
    with ServerThread(settings) as server:
        async with realtime_client(server.ws_url) as client:
            await client.subscribe(f"table:public.{table}", since=0)
            replayed = await client.broadcasts(3000)
        assert server.services.hub.slow_consumer_disconnects == 0
    assert _names(replayed) == [f"b{n}" for n in range(1, 3001)]


@BOTH_MODES
async def test_replay_and_live_agree_on_commit_order(
    server: ServerThread, database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    t = sql.Identifier(table)
    async with realtime_client(server.ws_url) as live:
        await live.subscribe(channel)
        await _insert(db, table, "mark")
        [mark] = await live.broadcasts(1)
        async with (
            await psycopg.AsyncConnection.connect(database_url) as first,
            await psycopg.AsyncConnection.connect(database_url) as second,
        ):
            # `first` takes the lower sequence value but commits after `second`.
            await first.execute(sql.SQL("INSERT INTO {} (name) VALUES ('A: written first')").format(t))
            await second.execute(sql.SQL("INSERT INTO {} (name) VALUES ('B: written second')").format(t))
            await second.commit()
            [b_live] = await live.broadcasts(1)
            await first.commit()
            [a_live] = await live.broadcasts(1)
    # A client that stopped right after B resumes without losing A, which was numbered after B.
    async with realtime_client(server.ws_url) as resumed:
        await resumed.subscribe(channel, since=b_live["id"])
        [a_replayed] = await resumed.broadcasts(1)
    async with realtime_client(server.ws_url) as replayed:
        await replayed.subscribe(channel, since=mark["id"])
        order = await replayed.broadcasts(2)
    assert a_replayed == a_live
    assert order == [b_live, a_live]


async def _drain_until(client: RealtimeClient, name: str) -> list[dict[str, Any]]:
    return await client.until_broadcast(lambda m: m["payload"]["record"]["name"] == name)


@BOTH_MODES
async def test_a_restarted_service_gives_resuming_clients_exactly_what_they_missed(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    with ServerThread(make_settings(database_url)) as first:
        async with realtime_client(first.ws_url) as client:
            await client.subscribe(channel)
            await _insert(db, table, "seen 1", "seen 2")
            before = await client.broadcasts(2)
    await _insert(db, table, "missed 1", "missed 2", "missed 3")  # no service running
    with ServerThread(make_settings(database_url)) as second:
        async with realtime_client(second.ws_url) as client:
            await client.subscribe(channel, since=before[-1]["id"])
            missed = await client.broadcasts(3)
            await _insert(db, table, "live")
            [live] = await client.broadcasts(1)
    assert _names(missed) == ["missed 1", "missed 2", "missed 3"]
    assert live["payload"]["record"]["name"] == "live"


@BOTH_MODES
async def test_two_instances_deliver_everything_and_clients_can_move_between_them(
    database_url: str, table: str
) -> None:
    channel = f"table:public.{table}"
    with ServerThread(make_settings(database_url)) as staying:
        leaving = ServerThread(make_settings(database_url)).__enter__()
        try:
            async with (
                realtime_client(staying.ws_url) as on_staying,
                realtime_client(leaving.ws_url) as on_leaving,
            ):
                await on_staying.subscribe(channel)
                await on_leaving.subscribe(channel)
                async with _writing(database_url, table, 400):
                    from_leaving = await on_leaving.broadcasts(150)
                    leaving.__exit__(None, None, None)  # the instance stops mid-stream
                    async with realtime_client(staying.ws_url) as moved:
                        await moved.subscribe(channel, since=from_leaving[-1]["id"])
                        from_leaving += await _drain_until(moved, "w399")
                from_staying = await _drain_until(on_staying, "w399")
        finally:
            leaving.__exit__(None, None, None)
    expected = [f"w{n}" for n in range(400)]
    assert _names(from_staying) == expected
    assert _names(from_leaving) == expected
    assert [m["id"] for m in from_leaving] == [m["id"] for m in from_staying]


async def _oldest_retained(db: psycopg.AsyncConnection) -> int:
    row = await (await db.execute("SELECT fluxbase_realtime.oldest_retained_id()")).fetchone()
    assert row is not None
    return int(row[0])


async def _wait_for_pruning_past(db: psycopg.AsyncConnection, change_id: int) -> None:
    for _ in range(3000):
        if await _oldest_retained(db) > change_id:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the change log was never pruned past {change_id}")


class TestRetention:
    """Pruning tests run on a database of their own: pruning the shared log would turn every later
    `since=0` there into a replay gap."""

    @pytest.fixture
    def database_url(self, server_url: str) -> Iterator[str]:
        with scratch_database(server_url) as url:
            migrations.upgrade(url)
            yield url

    async def test_pruned_history_is_reported_as_a_replay_gap_before_what_remains(
        self, database_url: str, db: psycopg.AsyncConnection, table: str
    ) -> None:
        channel = f"table:public.{table}"
        settings = make_settings(
            database_url, realtime_retention_max_rows=5, realtime_retention_interval=0.05
        )
        with ServerThread(settings) as server:
            async with realtime_client(server.ws_url) as client:
                await client.subscribe(channel)
                await _insert(db, table, *(f"old {n}" for n in range(10)))
                old = await client.broadcasts(10)
            # Pruning runs in batches: wait until it has kept only the newest five.
            await _wait_for_pruning_past(db, old[4]["id"])
            async with realtime_client(server.ws_url) as client:
                await client.subscribe(channel, since=old[0]["id"])
                gap = await client.receive()
                replayed = await client.broadcasts(5)
                await _insert(db, table, "live")
                [live] = await client.broadcasts(1)
        assert gap["type"] == "error" and gap["code"] == "replay_gap" and gap["channel"] == channel
        assert "no longer retained" in gap["error"]
        assert _names(replayed) == [f"old {n}" for n in range(5, 10)]
        assert live["payload"]["record"]["name"] == "live"

    async def test_changes_are_pruned_by_age(
        self, database_url: str, db: psycopg.AsyncConnection, table: str
    ) -> None:
        settings = make_settings(
            database_url,
            realtime_retention_seconds=0.2,
            realtime_retention_max_rows=None,
            realtime_retention_interval=0.05,
        )
        with ServerThread(settings) as server:
            async with realtime_client(server.ws_url) as client:
                await client.subscribe(f"table:public.{table}")
                await _insert(db, table, "ages")
                [change] = await client.broadcasts(1)
                await _wait_for_pruning_past(db, change["id"])
                remaining = await (
                    await db.execute(
                        "SELECT count(*) FROM fluxbase_realtime.change_log WHERE table_name = %s", (table,)
                    )
                ).fetchone()
                assert remaining == (0,)
                await _insert(db, table, "still delivered")
                [after] = await client.broadcasts(1)
        assert after["payload"]["record"]["name"] == "still delivered"


@BOTH_MODES
async def test_since_ahead_of_the_database_is_a_replay_gap_then_live(
    server: ServerThread, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    async with realtime_client(server.ws_url) as client:
        await client.subscribe(channel, since=2**62)
        gap = await client.receive()
        await _insert(db, table, "live")
        [live] = await client.broadcasts(1)
    assert gap["code"] == "replay_gap" and "newer than the newest change" in gap["error"]
    assert live["payload"]["record"]["name"] == "live"


async def test_unsubscribe_during_a_replay_stops_it(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    t = sql.Identifier(table)
    await db.execute(
        sql.SQL("INSERT INTO {} (name) SELECT 'b' || g FROM generate_series(1, 2000) g").format(t)
    )
    other = f"{table}_other"
    await db.execute(sql.SQL("CREATE TABLE public.{} (id serial, name text)").format(sql.Identifier(other)))
    await db.execute("SELECT enable_realtime('public', %s)", (other,))
    settings = make_settings(database_url, realtime_send_queue_size=16)
    with ServerThread(settings) as server:
        async with realtime_client(server.ws_url) as client:
            await client.subscribe(f"table:public.{other}")
            await client.subscribe(f"table:public.{table}", since=0)
            await client.send(type="unsubscribe", channel=f"table:public.{table}", ref="stop")
            # Whatever of the replay was already queued arrives; then the ack; then nothing more of it.
            while (message := await client.receive())["type"] == "broadcast":
                assert message["channel"] == f"table:public.{table}"
            assert message == {"type": "ack", "channel": f"table:public.{table}", "ref": "stop"}
            await _insert(db, table, "not for me")
            await _insert(db, other, "sentinel")
            [sentinel] = await client.broadcasts(1)
    assert sentinel["channel"] == f"table:public.{other}"


@pytest.mark.parametrize("since", [0, 5])
async def test_the_ack_comes_before_replayed_changes(
    server: ServerThread, db: psycopg.AsyncConnection, table: str, since: int
) -> None:
    await _insert(db, table, *(f"r{n}" for n in range(3)))
    async with realtime_client(server.ws_url) as client:
        await client.send(type="subscribe", channel=f"table:public.{table}", since=since, ref="first")
        first = await client.receive()
    assert first["type"] == "ack" and first["ref"] == "first"
