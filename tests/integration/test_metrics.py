"""GET /metrics on a real server: Prometheus' text format, and counters that follow what really happened."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql
from websockets.exceptions import ConnectionClosed

from app import migrations
from app.wire import text_frame
from tests.conftest import make_settings
from tests.support.channels import join, room
from tests.support.client import RECEIVE_TIMEOUT, RealtimeClient, realtime_client
from tests.support.databases import scratch_database
from tests.support.metrics import scrape, value
from tests.support.server import ServerThread

P = "fluxbase_realtime_"


async def test_metrics_count_connections_messages_deliveries_and_refusals(
    database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    channel = f"table:public.{table}"
    with ServerThread(make_settings(database_url, realtime_allowed_origins=["https://ok.example"])) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            before = await scrape(http)
            async with realtime_client(server.ws_url) as first, realtime_client(server.ws_url) as second:
                await first.subscribe(channel)
                await second.subscribe(channel)
                await second.send_raw("not json")
                assert (await second.receive())["type"] == "error"
                await first.send(type="unsubscribe", channel="table:public.never_subscribed")
                assert (await first.receive())["type"] == "error"
                during = await scrape(http)
                await db.execute(
                    sql.SQL("INSERT INTO {} (name) VALUES ('a'), ('b'), ('c')").format(sql.Identifier(table))
                )
                raw = [await _raw_broadcast(client) for client in (first, second) for _ in range(3)]
                after = await scrape(http)
            for headers in ({"Authorization": "Bearer not-a-token"}, {"Origin": "https://evil.example"}):
                async with realtime_client(server.ws_url, additional_headers=headers) as refused:
                    assert (await refused.receive())["type"] == "error"
                    with pytest.raises(ConnectionClosed):
                        await refused.receive()
            closed = await scrape(http)
            stats = (await http.get("/api/realtime/stats")).json()

    def delta(name: str, later: dict = after, **labels: str) -> float:  # type: ignore[type-arg]
        return value(later, P + name, **labels) - value(before, P + name, **labels)

    assert value(during, P + "connections") == 2
    assert value(during, P + "subscriptions", kind="table") == 2
    assert value(during, P + "channels", kind="table") == 1
    assert value(during, P + "subscriptions", kind="broadcast") == 0
    assert delta("connections_opened_total") == 2
    assert delta("messages_received_total", type="subscribe") == 2
    assert delta("messages_received_total", type="unsubscribe") == 1
    assert delta("messages_received_total", type="invalid") == 1
    assert delta("messages_sent_total", type="ack") == 2
    assert delta("messages_sent_total", type="error") == 2
    # Three changes to two subscribers: six live deliveries, and their bytes as written (header included).
    assert delta("deliveries_total") == 6
    assert delta("messages_sent_total", type="broadcast") == 6
    assert delta("delivered_bytes_total") == sum(len(text_frame(text)) for text in raw)
    last_id = orjson.loads(raw[-1])["id"]
    assert delta("read_to_send_seconds_count") == 3
    assert delta("read_to_send_seconds_bucket", le="+Inf") == 3
    # One commit; observed only where the database records commit timestamps (the machine's PostgreSQL may
    # not: then never).
    stamped = (await (await db.execute("SHOW track_commit_timestamp")).fetchone()) == ("on",)
    assert delta("commit_to_send_seconds_count") == (1 if stamped else 0)
    assert delta("sequencer_passes_total") >= 1
    assert delta("feed_pass_seconds_count") >= 1
    assert value(after, P + "feed_lag_changes") == 0
    assert value(after, P + "feed_last_delivered_id") == last_id == stats["last_change_id"]
    assert value(after, P + "send_queue_capacity_frames") == 1024
    assert delta("connections_rejected_total", later=closed, reason="token") == 1
    assert delta("connections_rejected_total", later=closed, reason="origin") == 1
    assert delta("connections_rejected_total", later=closed, reason="user_limit") == 0
    assert value(closed, P + "connections") == 0
    assert value(closed, "process_resident_memory_bytes") > 0
    # Prometheus' conventions: one prefix, counters end in _total.
    ours = {name for name, _ in closed if name.startswith(P)}
    assert {P + "rls_checks_total", P + "replay_gaps_total", P + "slow_consumer_closes_total"} <= ours
    assert {P + "event_loop_lag_seconds_count", P + "event_loop_lag_max_seconds"} <= ours  # tests/unit
    assert all(name.startswith(P) or name.startswith("process_") for name, _ in closed)


@pytest.fixture(scope="module")
def stamped_trigger(logical_server_url: str) -> Iterator[tuple[str, ServerThread]]:
    """A server on a migrated trigger-mode database of the logical cluster, which records commit
    timestamps (the embedded machinery's settings) where the machine's PostgreSQL may not."""
    with scratch_database(logical_server_url) as url:
        migrations.upgrade(url)
        with ServerThread(make_settings(url)) as running:
            yield url, running


@pytest.fixture(params=["trigger", "logical"])
def stamped(request: pytest.FixtureRequest) -> tuple[str, ServerThread]:
    """A database and its server: trigger mode with commit timestamps recorded, or logical mode (pgoutput's
    Begin carries them)."""
    if request.param == "trigger":
        database_and_server: tuple[str, ServerThread] = request.getfixturevalue("stamped_trigger")
        return database_and_server
    return request.getfixturevalue("logical_database_url"), request.getfixturevalue("logical_server")


async def test_commit_to_send_latency_is_observed_once_per_commit(stamped: tuple[str, ServerThread]) -> None:
    """Two commits of 3 and 2 changes, delivered to two subscribers: 10 deliveries, 2 observations."""
    url, server = stamped
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        name = f"stamped_{uuid.uuid4().hex[:10]}"
        table = sql.Identifier(name)
        await db.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, name text)").format(table))
        await db.execute("SELECT enable_realtime('public', %s)", (name,))
        async with (
            httpx.AsyncClient(base_url=server.http_url) as http,
            realtime_client(server.ws_url) as first,
            realtime_client(server.ws_url) as second,
        ):
            await first.subscribe(f"table:public.{name}")
            await second.subscribe(f"table:public.{name}")
            before = await scrape(http)
            started = time.time()
            await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('a'), ('b'), ('c')").format(table))
            await db.execute(sql.SQL("INSERT INTO {} (name) VALUES ('d'), ('e')").format(table))
            # The sentinel: the last change reached both subscribers, so the feed has published both
            # commits (it observes them before its next await).
            for client in (first, second):
                names = [frame["payload"]["record"]["name"] for frame in await client.broadcasts(5)]
                assert names == ["a", "b", "c", "d", "e"]
            after = await scrape(http)
            finished = time.time()

    def delta(name: str, **labels: str) -> float:
        return value(after, P + name, **labels) - value(before, P + name, **labels)

    assert delta("deliveries_total") == 10
    assert delta("read_to_send_seconds_count") == 5
    assert delta("commit_to_send_seconds_count") == 2
    assert delta("commit_to_send_seconds_bucket", le="+Inf") == 2
    # Each observation lies between its COMMIT and the scrape (one host: one clock), so their sum does.
    assert 0 <= delta("commit_to_send_seconds_sum") <= 2 * (finished - started)


async def _raw_broadcast(client: RealtimeClient) -> str:
    """The next broadcast's text exactly as the server sent it."""
    while True:
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            text = await client.connection.recv()
        assert isinstance(text, str)
        if orjson.loads(text)["type"] != "heartbeat":
            assert orjson.loads(text)["type"] == "broadcast", text
            return text


async def test_metrics_count_broadcast_channels_and_the_bus(database_url: str) -> None:
    channel = room()
    with ServerThread(make_settings(database_url)) as server:
        async with (
            httpx.AsyncClient(base_url=server.http_url) as http,
            realtime_client(server.ws_url) as sender,
            realtime_client(server.ws_url) as other,
        ):
            before = await scrape(http)
            await join(sender, channel)
            await join(other, channel)
            await sender.send(type="broadcast", channel=channel, event="e", payload={"n": 1})
            assert (await other.receive())["event"] == "e"
            after = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, P + name, **labels) - value(before, P + name, **labels)

    assert value(after, P + "subscriptions", kind="broadcast") == 2
    assert value(after, P + "channels", kind="broadcast") == 1
    assert value(after, P + "subscriptions", kind="table") == 0
    assert delta("messages_received_total", type="broadcast") == 1
    assert delta("broadcast_messages_total") == 1
    assert delta("messages_sent_total", type="presence_state") == 2
    # The message reached one subscriber (not its sender): one broadcast frame, one live delivery (the
    # presence states are replies to the subscribes).
    assert delta("messages_sent_total", type="broadcast") == 1
    assert delta("deliveries_total") == 1
    assert value(after, P + "bus_up", bus="postgres") == 1


@pytest.mark.parametrize("capture_mode", ["trigger", "logical"], indirect=True)
async def test_slot_lag_gauges_in_logical_mode_only(
    capture_mode: str, server: ServerThread, database_url: str, db: psycopg.AsyncConnection, table: str
) -> None:
    lag_bytes, lag_seconds = (P + "capture_slot_lag_bytes", ()), (P + "capture_slot_lag_seconds", ())
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        async with realtime_client(server.ws_url) as client:
            await client.subscribe(f"table:public.{table}")
            await db.execute(
                sql.SQL("INSERT INTO {} (name) VALUES ('a'), ('b')").format(sql.Identifier(table))
            )
            delivered = (await client.broadcasts(2))[-1]["id"]
        if capture_mode == "trigger":
            samples = await scrape(http)
            # The sentinel: this scrape is after the delivery, and still has no slot gauges.
            assert value(samples, P + "feed_last_delivered_id") == delivered
            assert not {name for name, _ in samples if name.startswith(P + "capture_slot_")}
            return
        # The shared server consumes (the consumer of an earlier test's server may just have let go).
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while not (await http.get("/api/realtime/stats")).json()["consumer"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        samples = await scrape(http)
    assert samples[lag_bytes] >= 0 and samples[lag_seconds] >= 0
    # Another instance: the slot's bytes (any instance can tell), as of its monitor's latest check (at
    # start, then not for an hour, and the stats' own), not the seconds (only the consumer knows them).
    with ServerThread(make_settings(database_url, realtime_slot_check_interval=3600.0)) as other:
        async with httpx.AsyncClient(base_url=other.http_url) as http:
            stats = (await http.get("/api/realtime/stats")).json()
            samples = await scrape(http)
    assert stats["consumer"] is False
    assert samples[lag_bytes] == stats["slot_lag_bytes"] >= 0
    assert lag_seconds not in samples and (P + "feed_last_delivered_id", ()) in samples
