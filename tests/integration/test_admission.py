"""Admission control over real sockets: past capacity, or while the event loop runs late, a connection gets
a fast 503 with Retry-After before the upgrade, past the bound of waiting subscribes a subscribe gets
subscribe_failed at once; and the subscribes of a storm share their database checks without mixing up
their answers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import httpx
import psycopg
import pytest
from psycopg import sql
from websockets.exceptions import InvalidStatus

from tests.conftest import make_settings
from tests.support.client import RealtimeClient, realtime_client
from tests.support.metrics import scrape, value
from tests.support.sequencer import SEQUENCER_LOCK, SEQUENCER_UNLOCK, WAITING_FOR_ADVISORY_LOCK
from tests.support.server import ServerThread

P = "fluxbase_realtime_"


async def _until(condition: object, what: str) -> None:
    for _ in range(1000):
        if callable(condition) and await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_past_max_connections_a_client_gets_503_with_retry_after_before_the_upgrade(
    database_url: str, table: str
) -> None:
    channel = f"table:public.{table}"
    settings = make_settings(database_url, realtime_max_connections=5, realtime_retry_after_seconds=7)
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http, contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(5)]
            for client in clients:
                await client.subscribe(channel)
            with pytest.raises(InvalidStatus) as refused:
                async with realtime_client(server.ws_url):
                    pass
            response = refused.value.response
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "7"
            assert b"at capacity" in response.body
            metrics = await scrape(http)
            assert value(metrics, P + "connections_rejected_total", reason="capacity") == 1
            assert value(metrics, P + "connections") == 5
            # The ones already in are unaffected, and a slot that frees up takes a new connection.
            await clients[0].subscribe(channel)
            await clients.pop().connection.close()

            async def one_left() -> bool:
                return bool((await http.get("/api/realtime/stats")).json()["connections"] == 4)

            await _until(one_left, "the closed connection was released")
            async with realtime_client(server.ws_url) as again:
                await again.subscribe(channel)


STALL = 1.0  # seconds the test holds the server's event loop: a real stall, far past the bound below


async def test_while_the_event_loop_runs_late_a_new_client_gets_503_and_those_in_are_served(
    database_url: str, table: str
) -> None:
    channel = f"table:public.{table}"
    with ServerThread(make_settings(database_url, realtime_max_loop_lag_seconds=0.2)) as server:
        loop = server.server.servers[0].get_loop()

        async def lag_now() -> float:
            return server.services.loop_lag.recent()

        async def caught_up() -> bool:
            return asyncio.run_coroutine_threadsafe(lag_now(), loop).result(5) <= 0.2

        async with (
            httpx.AsyncClient(base_url=server.http_url) as http,
            realtime_client(server.ws_url) as inside,
        ):
            await inside.subscribe(channel)
            holding = threading.Event()

            def hold() -> None:
                holding.set()
                time.sleep(STALL)  # synchronous work on the loop, as a storm's backlog of callbacks is

            loop.call_soon_threadsafe(hold)
            assert await asyncio.to_thread(holding.wait, 5)
            # Connected while the loop is held: served after it, when the loop is known to be late.
            with pytest.raises(InvalidStatus) as refused:
                async with realtime_client(server.ws_url):
                    pass
            response = refused.value.response
            assert response.status_code == 503
            assert int(response.headers["Retry-After"]) >= 1
            assert b"overloaded" in response.body
            metrics = await scrape(http)
            assert value(metrics, P + "connections_rejected_total", reason="overloaded") == 1
            assert value(metrics, P + "connections_rejected_total", reason="capacity") == 0
            # The connection already in is served as before, and once the loop is on time, new ones get in.
            await inside.subscribe(channel)
            await _until(caught_up, "the loop ran on time again")
            async with realtime_client(server.ws_url) as again:
                await again.subscribe(channel)
            assert value(await scrape(http), P + "connections_rejected_total", reason="overloaded") == 1


async def test_past_max_pending_subscribes_a_subscribe_is_refused_at_once_then_succeeds_on_retry(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    # Held by the test, the sequencer's lock keeps the subscribes' pass from finishing: they wait.
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as holder:
        with ServerThread(make_settings(database_url, realtime_max_pending_subscribes=2)) as server:
            async with contextlib.AsyncExitStack() as stack:
                clients = [await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(3)]
                await holder.execute(SEQUENCER_LOCK)
                try:
                    await clients[0].send(type="subscribe", channel=channel, ref="first")

                    async def pass_blocked() -> bool:
                        row = await (await db.execute(WAITING_FOR_ADVISORY_LOCK)).fetchone()
                        return bool(row and row[0] >= 1)

                    await _until(pass_blocked, "the subscribe's sequencer pass waits for the lock")
                    for n, client in enumerate(clients[1:], start=2):
                        await client.send(type="subscribe", channel=channel, ref=f"r{n}")
                    # One of the two later ones fits under the bound of 2 waiting; the other is refused
                    # now, while the lock is still held: it does not wait for the database.
                    refused, waiting = await _first_answer(clients[1], clients[2])
                    assert refused["type"] == "error" and refused["code"] == "subscribe_failed", refused
                    assert "too many subscribes are waiting" in refused["error"]
                    assert refused["retry_after"] == 1  # REALTIME_RETRY_AFTER_SECONDS' default
                finally:
                    await holder.execute(SEQUENCER_UNLOCK)
                for client in (clients[0], waiting):
                    ack = await client.receive()
                    assert ack["type"] == "ack", ack
                retried = await refused_client(clients, refused)
                assert (await retried.subscribe(channel))["type"] == "ack"
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                metrics = await scrape(http)
    assert value(metrics, P + "subscribes_refused_busy_total") == 1


async def _first_answer(a: RealtimeClient, b: RealtimeClient) -> tuple[dict, RealtimeClient]:  # type: ignore[type-arg]
    """The first frame either client receives, and the other client."""
    tasks = {asyncio.create_task(a.receive()): b, asyncio.create_task(b.receive()): a}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    first = done.pop()
    return first.result(), tasks[first]


async def refused_client(clients: list[RealtimeClient], refused: dict) -> RealtimeClient:  # type: ignore[type-arg]
    return clients[1] if refused.get("ref") == "r2" else clients[2]


async def test_subscribes_asking_at_once_share_queries_and_each_gets_its_own_answer(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    disabled = f"{table}_off"
    await db.execute(sql.SQL("CREATE TABLE public.{} (id int)").format(sql.Identifier(disabled)))
    channels = {
        f"table:public.{table}": "ack",
        "table:public.no_such_table_here": "does not exist",
        f"table:public.{disabled}": "realtime is not enabled",
        'table:public.we"ird\\name': "does not exist",
    }
    with ServerThread(make_settings(database_url)) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http, contextlib.AsyncExitStack() as stack:
            before = await scrape(http)
            clients = [await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(40)]
            wanted = list(channels)
            # Every client sends before any reads: the checks are asked for in a burst.
            await asyncio.gather(
                *(c.send(type="subscribe", channel=wanted[n % 4], ref=n) for n, c in enumerate(clients))
            )
            answers = await asyncio.gather(*(c.receive() for c in clients))
            after = await scrape(http)
            for n, answer in enumerate(answers):
                expected = channels[wanted[n % 4]]
                assert answer["ref"] == n
                if expected == "ack":
                    assert answer["type"] == "ack", answer
                else:
                    assert answer["type"] == "error" and expected in answer["error"], answer
            # A table enabled now is seen by the next subscribe: nothing is cached.
            await db.execute("SELECT enable_realtime('public', %s)", (disabled,))
            assert (await clients[2].subscribe(f"table:public.{disabled}"))["type"] == "ack"
            # And one disabled now refuses the next subscribe, with no delay for a cache to expire.
            await db.execute("SELECT disable_realtime('public', %s)", (disabled,))
            await clients[6].send(type="subscribe", channel=f"table:public.{disabled}", ref="after")
            refused = await clients[6].receive()
            assert refused["type"] == "error" and "realtime is not enabled" in refused["error"], refused

    def delta(name: str) -> float:
        return value(after, P + name) - value(before, P + name)

    assert delta("subscribe_checks_total") == 40
    assert 1 <= delta("subscribe_check_queries_total") <= 40


async def test_replays_resuming_from_one_id_at_once_share_their_reads_of_the_log(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    insert = sql.SQL("INSERT INTO {} (name) VALUES ('a'), ('b'), ('c') RETURNING id").format(
        sql.Identifier(table)
    )
    await db.execute(insert)
    count = 10
    # A fresh server holds none of these changes in memory: the replays must read them from the log.
    with ServerThread(make_settings(database_url)) as server:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(count)]
            replayer = server.services.replayer
            async with db.transaction():
                # Held until every replay is waiting: they all ask for the log at once.
                await db.execute("LOCK TABLE fluxbase_realtime.change_log IN ACCESS EXCLUSIVE MODE")
                for client in clients:
                    await client.send(type="subscribe", channel=f"table:public.{table}", since=0)

                async def all_started() -> bool:
                    return replayer.replays == count

                await _until(all_started, "every replay started")
            for client in clients:
                assert (await client.receive())["type"] == "ack"
                replayed = await client.broadcasts(3)
                assert [m["payload"]["record"]["name"] for m in replayed] == ["a", "b", "c"]
            # Each got everything, once; the log was read once for the first replay and once for all the
            # others (they asked while the first read ran), not once each.
            assert replayer.reads.asked >= count
            assert replayer.reads.batches <= 2


async def test_a_replay_refused_for_load_says_when_to_resume_and_logs_no_traceback(
    database_url: str, db: psycopg.AsyncConnection, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('a')").format(sql.Identifier(table)))
    channel = f"table:public.{table}"
    settings = make_settings(database_url, realtime_max_pending_subscribes=2, realtime_retry_after_seconds=5)
    with ServerThread(settings) as server:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(realtime_client(server.ws_url)) for _ in range(3)]
            replayer = server.services.replayer
            async with db.transaction():
                # Held until the third replay has been refused: the first two wait for the log's bounds.
                await db.execute("LOCK TABLE fluxbase_realtime.change_log IN ACCESS EXCLUSIVE MODE")
                for client in clients:
                    await client.send(type="subscribe", channel=channel, since=0)
                    assert (await client.receive())["type"] == "ack"

                async def all_started() -> bool:
                    return replayer.replays == len(clients)

                await _until(all_started, "every replay started")
                # The replays started in the clients' order: the third found two waiting.
                refused = await clients[2].receive()
            assert refused["code"] == "subscribe_failed" and refused["channel"] == channel, refused
            assert "replay refused for now" in refused["error"]
            assert refused["retry_after"] == 5
            for client in clients[:2]:  # the two that waited replay once the log is free again
                assert [m["payload"]["record"]["name"] for m in await client.broadcasts(1)] == ["a"]
    assert not [r for r in caplog.records if r.exc_info], "a refusal for load is not a fault"
